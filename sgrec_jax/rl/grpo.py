"""The GRPO-family policy update (algorithms.md section 5) and the jitted RL step around it.

    rl_step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                           estimator=estimator, settings=settings, mesh=mesh,
                           state_sharding=state_sharding)
    state, metrics = rl_step(state, ref_params, channels, catalog, host_to_global(batch, mesh))

One call is one rollout batch, all inside one jit: G candidates per request from the current
policy (`rollout.generate`), their per-token log-probs under pi_old and the frozen SFT reference
pi_ref (`rollout.score_group`), the reward tensor R[B, G, K], the advantages of the configured
estimator (with the per-channel gradient Gram matrix when it needs one), then
`updates_per_batch` clipped policy-gradient updates under `lax.scan`, each the shared
`train_state.make_update` step with `grpo_loss`. The state is donated; the reference parameters
are a separate argument, sharded like the policy's and never seen by the optimizer.

`TrainState.step` counts rollout batches (the optimizer's own count is in its state);
`nonfinite_steps` counts skipped updates. A batch whose rewards are faulty (inf anywhere, or NaN
in a channel that has no "not judged" state) trains on nothing: its advantages become NaN, so
every update of the batch sees a non-finite loss, is skipped and counted, and the estimator keeps
its state. Non-finite values never reach the parameters.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh

from sgrec_jax.core.policy_gradient import clipped_objective, k3_kl
from sgrec_jax.core.sharding import batch_sharding, replicated
from sgrec_jax.rewards.channel import RewardChannel, RewardRequests, reward_tensor
from sgrec_jax.rl.estimators import Estimator, channel_advantages
from sgrec_jax.rl.rollout import generate, score_group
from sgrec_jax.sid.catalog import Catalog
from sgrec_jax.train.train_state import LossFn, Metrics, TrainState, make_update

# Per-update metrics averaged over the updates of a rollout batch.
UPDATE_MEANS = ("loss", "grad_norm", "policy_objective", "kl", "clip_frac", "ratio_mean")


@dataclasses.dataclass(frozen=True)
class RLSettings:
    """The static settings of one RL step (the rl config section's, see experiments/configs).

    Attributes:
      group_size: G candidates per request.
      rollout: "beam" or "sample" (`rollout.ROLLOUT_MODES`).
      temperature: sampling temperature (sample rollouts only).
      updates_per_batch: optimizer updates per rollout batch (pi_old = the rollout policy).
      clip_eps: PPO clip range of the token ratio.
      beta: weight of the k3 KL penalty to the reference.
      semantic_sample_ratio: fraction of requests judged by semantic channels (sparse judging).
      judge_seed: seeds the sparse-judging mask.
      gradient_params: regex over parameter paths ("decoder/0/mlp_in/kernel") selecting the
        parameters whose per-channel gradients form the Gram matrix (popo, mgda); "" = all.
    """

    group_size: int
    rollout: str
    temperature: float
    updates_per_batch: int
    clip_eps: float
    beta: float
    semantic_sample_ratio: float
    judge_seed: int
    gradient_params: str = ""


def grpo_loss(
    token_logprob_bgl: jax.Array,
    old_token_logprob_bgl: jax.Array,
    ref_token_logprob_bgl: jax.Array,
    advantage_bg: jax.Array,
    *,
    clip_eps: float,
    beta: float,
) -> tuple[jax.Array, Metrics]:
    """-J, the negated clipped objective minus the KL penalty, and its metrics.

    J = mean_{b,g} 1/L sum_t min(rho A, clip(rho, 1-eps, 1+eps) A) - beta mean k3, with the
    token ratio rho = pi / pi_old. Metrics: policy_objective (the clipped term), kl (mean k3
    over tokens), clip_frac (tokens where clipping binds: rho > 1+eps with A > 0 or
    rho < 1-eps with A < 0), ratio_mean.
    """
    terms = clipped_objective(
        token_logprob_bgl, old_token_logprob_bgl, advantage_bg[:, :, None], clip_eps
    )
    objective = terms.objective.mean()
    kl = k3_kl(token_logprob_bgl, ref_token_logprob_bgl).mean()
    metrics = {
        "policy_objective": objective,
        "kl": kl,
        "clip_frac": terms.binds.mean(),
        "ratio_mean": terms.ratio.mean(),
    }
    return -(objective - beta * kl), metrics


def policy_loss(catalog: Catalog, *, clip_eps: float, beta: float) -> LossFn:
    """The `make_update` loss of a scored group batch.

    Batch: history [B, H], history_mask [B, H], codes_bgl [B, G, L], old_token_logprob_bgl,
    ref_token_logprob_bgl [B, G, L], advantage_bg [B, G], first_update bool []. On the first
    update pi_old is pi itself (same function, same parameters), taken from this very forward
    pass, so the ratio is exactly 1 whatever the compiler fuses differently.
    """

    def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        del rng  # Scoring is deterministic: dropout would make pi differ from pi_old.
        logp_bgl = score_group(
            model, catalog, batch["history"], batch["history_mask"], batch["codes_bgl"]
        ).token_logprob_bgl
        old_bgl = jnp.where(
            batch["first_update"], jax.lax.stop_gradient(logp_bgl), batch["old_token_logprob_bgl"]
        )
        return grpo_loss(logp_bgl, old_bgl, batch["ref_token_logprob_bgl"],
                         batch["advantage_bg"], clip_eps=clip_eps, beta=beta)

    return loss_fn


def param_path(path: tuple[Any, ...]) -> str:
    """"decoder/0/mlp_in/kernel" for a parameter's pytree path (what gradient_params matches)."""
    parts = [str(getattr(k, "key", getattr(k, "idx", ""))) for k in path
             if not isinstance(k, jax.tree_util.GetAttrKey)]
    return "/".join(parts)


def select_params(params: Any, pattern: str) -> list[int]:
    """Indices (in `jax.tree.leaves` order) of the parameters whose path matches `pattern`."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    chosen = [i for i, (path, _) in enumerate(leaves) if re.search(pattern, param_path(path))]
    if not chosen:
        names = ", ".join(param_path(path) for path, _ in leaves[:5])
        raise ValueError(f"gradient_params {pattern!r} matches no parameter (paths look like "
                         f"{names}, ...)")
    return chosen


def channel_gram(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    model_state: nnx.State,
    catalog: Catalog,
    batch: dict,
    channel_adv_bgk: jax.Array,
    gradient_params: str = "",
) -> jax.Array:
    """float32 [K, K] Gram matrix <g_i, g_j> of the per-channel policy gradients at pi_old.

    g_k is the gradient of the clipped policy loss (no KL term) whose advantage is channel k's
    alone, channel_adv_bgk[..., k], at the rollout parameters (where the ratio is 1 and the
    clip is inactive), restricted to the parameters matching `gradient_params`. The forward
    pass is shared by the K channels (one reverse pass each).
    """
    leaves, treedef = jax.tree.flatten(params)
    chosen = select_params(params, gradient_params)

    def channel_losses_k(selected: list[jax.Array]) -> jax.Array:
        full = list(leaves)
        for i, x in zip(chosen, selected, strict=True):
            full[i] = x
        model = nnx.merge(graphdef, jax.tree.unflatten(treedef, full), model_state, copy=True)
        logp_bgl = score_group(
            model, catalog, batch["history"], batch["history_mask"], batch["codes_bgl"]
        ).token_logprob_bgl
        old_bgl = jax.lax.stop_gradient(logp_bgl)

        def loss(adv_bg: jax.Array) -> jax.Array:
            return grpo_loss(logp_bgl, old_bgl, old_bgl, adv_bg, clip_eps=1.0, beta=0.0)[0]

        return jax.vmap(loss, in_axes=-1)(channel_adv_bgk)

    jacobian = jax.jacrev(channel_losses_k)([leaves[i] for i in chosen])
    k = channel_adv_bgk.shape[-1]
    gram_kk = jnp.zeros((k, k), jnp.float32)
    for g in jacobian:
        g_kp = g.reshape(k, -1).astype(jnp.float32)
        gram_kk += jnp.einsum("ip,jp->ij", g_kp, g_kp, precision=jax.lax.Precision.HIGHEST)
    return gram_kk


def judged_mask(key: jax.Array, user_b: jax.Array, target_b: jax.Array, ratio: float) -> jax.Array:
    """bool [B]: whether semantic channels judge each request (sparse judging).

    A seeded function of the request (user, target) alone, so a request is judged or not
    whatever batch it lands in and however often it is drawn; a `ratio` fraction is judged.
    """

    def draw(user: jax.Array, target: jax.Array) -> jax.Array:
        return jax.random.uniform(jax.random.fold_in(jax.random.fold_in(key, user), target))

    return jax.vmap(draw)(user_b, target_b) < ratio


def reward_fault(rewards_bgk: jax.Array, kinds: Sequence[str]) -> jax.Array:
    """bool []: a reward is inf, or NaN in a channel that is never "not judged" (non-semantic)."""
    may_be_nan_k = jnp.array([kind == "semantic" for kind in kinds])
    return jnp.isinf(rewards_bgk).any() | (jnp.isnan(rewards_bgk) & ~may_be_nan_k).any()


def init_extra(estimator: Estimator) -> dict[str, Any]:
    """TrainState.extra of an RL run: the estimator's state and the running training totals."""
    return {
        "estimator": estimator.init_state(),
        "totals": {"sign_agreement_sum": jnp.zeros((), jnp.float32),
                   "sign_agreement_steps": jnp.zeros((), jnp.int32)},
    }


def _accumulate(totals: dict, stats: Metrics, fault: jax.Array) -> dict:
    if "sign_agreement" not in stats:
        return totals
    value = stats["sign_agreement"]
    counted = jnp.isfinite(value) & ~fault
    return {
        "sign_agreement_sum": totals["sign_agreement_sum"] + jnp.where(counted, value, 0.0),
        "sign_agreement_steps": totals["sign_agreement_steps"] + counted.astype(jnp.int32),
    }


def make_rl_step(
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    channels: Sequence[RewardChannel],
    estimator: Estimator,
    settings: RLSettings,
    mesh: Mesh,
    state_sharding: TrainState,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """The jitted `rl_step(state, ref_params, channels, catalog, batch) -> (state, metrics)`.

    Args of the step: the train state (donated; extra as `init_extra` makes it), the reference
    parameters (sharded like state.params), the reward channels (a pytree of their tables,
    replicated), the catalog (replicated) and a batch of requests from
    `data.pipeline.train_iterator` (history, history_mask, target, user; split over the mesh).

    Metrics (replicated scalars): the estimator's stats (per-channel reward mean/std,
    zero-std fractions, sign agreement, A2PO lambda, weights, ...), the means over the batch's
    updates of loss, grad_norm, policy_objective, kl, clip_frac and ratio_mean, entropy (of
    the rollout policy over the candidates' tokens), judged_frac (sparse-judging mask),
    reward_fault (0/1), skipped (updates skipped in this batch), nonfinite_steps (running
    count) and learning_rate.
    """
    kinds = tuple(c.kind for c in channels)
    judge_key = jax.random.key(settings.judge_seed)

    # The channels' tables are an argument of the step (device arrays, not baked-in constants).
    def rl_step(state: TrainState, ref_params: nnx.State,
                reward_channels: Sequence[RewardChannel], catalog: Catalog,
                batch: dict) -> tuple[TrainState, Metrics]:
        rng, rollout_rng = jax.random.split(state.rng)
        history_bh, mask_bh = batch["history"], batch["history_mask"]
        policy = nnx.merge(graphdef, state.params, state.model_state)
        reference = nnx.merge(graphdef, ref_params, state.model_state)

        # Rollout and scoring: pi_old is the policy that generated the group.
        group = generate(policy, catalog, history_bh, mask_bh, rollout_rng,
                         mode=settings.rollout, group_size=settings.group_size,
                         temperature=settings.temperature)
        old = score_group(policy, catalog, history_bh, mask_bh, group.codes_bgl)
        ref = score_group(reference, catalog, history_bh, mask_bh, group.codes_bgl)

        # Rewards and advantages.
        judged_b = judged_mask(judge_key, batch["user"], batch["target"],
                               settings.semantic_sample_ratio)
        requests = RewardRequests.from_batch(batch, judged_b)
        rewards_bgk = reward_tensor(reward_channels, requests, group.items_bg, old.logprob_bg)
        fault = reward_fault(rewards_bgk, kinds)
        data = {"history": history_bh, "history_mask": mask_bh, "codes_bgl": group.codes_bgl,
                "old_token_logprob_bgl": old.token_logprob_bgl,
                "ref_token_logprob_bgl": ref.token_logprob_bgl}
        gram_kk = None
        if estimator.needs_gradients:
            gram_kk = channel_gram(graphdef, state.params, state.model_state, catalog, data,
                                   channel_advantages(rewards_bgk), settings.gradient_params)
        advantage_bg, estimator_state, stats = estimator(
            rewards_bgk, state.extra["estimator"], gram_kk=gram_kk
        )
        advantage_bg = jnp.where(fault, jnp.nan, advantage_bg)
        estimator_state = jax.tree.map(lambda new, old: jnp.where(fault, old, new),
                                       estimator_state, state.extra["estimator"])

        # Updates: pi moves away from pi_old over the batch's updates.
        update = make_update(
            graphdef, policy_loss(catalog, clip_eps=settings.clip_eps, beta=settings.beta),
            optimizer,
        )

        def one_update(state: TrainState, first: jax.Array) -> tuple[TrainState, Metrics]:
            return update(state, {**data, "advantage_bg": advantage_bg, "first_update": first})

        first_u = jnp.arange(settings.updates_per_batch) == 0
        new_state, per_update = jax.lax.scan(one_update, state.replace(rng=rng), first_u)
        extra = {"estimator": estimator_state,
                 "totals": _accumulate(state.extra["totals"], stats, fault)}
        new_state = new_state.replace(step=state.step + 1, extra=extra)

        metrics = {
            **stats,
            **{k: per_update[k].mean() for k in UPDATE_MEANS},
            "entropy": old.entropy_bgl.mean(),
            "judged_frac": judged_b.mean(),
            "reward_fault": fault.astype(jnp.int32),
            "skipped": per_update["skipped"].sum(),
            "nonfinite_steps": new_state.nonfinite_steps,
        }
        if "learning_rate" in per_update:
            metrics["learning_rate"] = per_update["learning_rate"][-1]
        return new_state, metrics

    return jax.jit(
        rl_step,
        in_shardings=(state_sharding, state_sharding.params, replicated(mesh), replicated(mesh),
                      batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )
