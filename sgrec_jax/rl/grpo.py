"""The GRPO-family policy update (algorithms.md section 5) and the jitted RL step around it.

    rl_step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                           estimator=estimator, settings=settings, mesh=mesh,
                           state_sharding=state_sharding)
    state, metrics = rl_step(state, ref_params, channels, catalog, host_to_global(batch, mesh))

One call is one rollout batch, all inside one jit: G candidates per request from the current
policy (`rollout.generate`), their per-token log-probs under pi_old and the frozen SFT reference
pi_ref (`rollout.score_group`), the reward tensor R[B, G, K], the advantages of the configured
estimator (with the per-channel gradient Gram matrix when it needs one) spread over the SID
levels (`level_credit`), then `updates_per_batch` clipped policy-gradient updates under
`lax.scan`, each the shared `train_state.make_update` step with `policy_loss`. The state is
donated; the reference parameters are a separate argument, sharded like the policy's and never
seen by the optimizer.

The loss (algorithms.md 5 and 5b) is

    pg_weight * (-J_clip) + beta * KL + nll_weight * NLL(target),

KL by `kl_estimator` ("k3" on the candidates' tokens, or the "exact" KL of the constrained
per-level distributions at the prefixes the candidates visit), NLL the SFT loss of each request's
logged target (`train.next_item`). pg_weight = 0, nll_weight = 1, beta = 0 is SFT continued on
the RL requests: the control row of an RL run. With `nll_learning_rate` > 0 the anchor is a
term of its own (`nll_anchor_loss`, its own forward pass over the targets alone) under its own
optimizer (`train.per_term_optimizer`), so Adam does not scale the two by the larger one.

pi_old without a second pass: with one update per rollout batch, the update's own forward pass
is at the rollout parameters, so it gives pi_old (and the logged entropy). The separate pi_old
pass runs only when something reads it first (`needs_old_pass`): a reward channel that reads the
policy's log-probs (`rank`), or updates after the first. (XLA drops a pass nothing reads; before,
the entropy metric alone kept it alive.)

`TrainState.step` counts rollout batches (the optimizer's own count is in its state);
`nonfinite_steps` counts skipped updates. A batch whose rewards are faulty (inf anywhere, or NaN
in a channel that has no "not judged" state) trains on nothing: its advantages become NaN, so
every update of the batch sees a non-finite loss, is skipped and counted, and the estimator keeps
its state (with pg_weight = 0 the advantages are not in the loss and the anchor still trains).
Non-finite values never reach the parameters.
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

from sgrec_jax.core.policy_gradient import clipped_objective, exact_kl, k3_kl
from sgrec_jax.core.sharding import batch_sharding, replicated
from sgrec_jax.decoding.logprob import encode_requests
from sgrec_jax.rewards.channel import RewardChannel, RewardRequests, reward_tensor
from sgrec_jax.rl.candidate_weighting import candidate_advantage, policy_weights
from sgrec_jax.rl.estimators import Estimator, channel_advantages
from sgrec_jax.rl.level_credit import level_advantage
from sgrec_jax.rl.rollout import generate, in_group_b, score_group, score_logits, with_target
from sgrec_jax.sid.catalog import Catalog
from sgrec_jax.train.next_item import next_item_nll
from sgrec_jax.train.train_state import LossFn, Metrics, TrainState, make_update

KL_ESTIMATORS = ("k3", "exact")
KL_DIRECTIONS = ("reverse", "forward")  # Of the exact KL (algorithms.md 5b).

# Per-update metrics averaged over the updates of a rollout batch (those the loss reports:
# kl_exact_forward only with kl_direction "forward").
UPDATE_MEANS = ("loss", "grad_norm", "policy_objective", "k3_beams", "kl_exact", "nll",
                "clip_frac", "ratio_mean", "kl_exact_forward")


@dataclasses.dataclass(frozen=True)
class RLSettings:
    """The static settings of one RL step (the rl config section's, see experiments/configs).

    Attributes:
      group_size: G candidates per request.
      rollout: "beam" or "sample" (`rollout.ROLLOUT_MODES`).
      temperature: sampling temperature (sample rollouts only).
      updates_per_batch: optimizer updates per rollout batch (pi_old = the rollout policy).
      clip_eps: PPO clip range of the token ratio.
      beta: weight of the KL penalty to the reference.
      semantic_sample_ratio: fraction of requests judged by semantic channels (sparse judging).
      judge_seed: seeds the sparse-judging mask.
      gradient_params: regex over parameter paths ("decoder/0/mlp_in/kernel") selecting the
        parameters whose per-channel gradients form the Gram matrix (popo, mgda); "" = all.
      pg_weight: weight of the clipped policy-gradient objective (0: no reward signal).
      nll_weight: weight of the NLL anchor, the SFT loss of each request's logged target.
      kl_estimator: "k3" (per token of the candidates) or "exact" (per-level distributions);
        `grpo_loss`.
      level_credit: "item" or "prefix_tree", how a candidate's advantage reaches its levels
        (`rl.level_credit`).
      kl_direction: "reverse" KL(pi || pi_ref) or "forward" KL(pi_ref || pi) for the exact KL.
      target_in_group: put each request's logged target into its group where the rollout missed
        it, in place of the last candidate (`rollout.with_target`).
      candidate_weighting: "uniform" (GRPO) or "policy", how much each candidate counts in the
        update (`rl.candidate_weighting`).
      nll_learning_rate: 0: the NLL anchor is a term of the one loss the optimizer sees; > 0:
        the anchor has its own optimizer at this learning rate (the caller builds the pair,
        `train.per_term_optimizer`) and the loss is two terms, the RL terms and the anchor
        (`policy_loss(separate_nll=True)`).
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
    pg_weight: float = 1.0
    nll_weight: float = 0.0
    kl_estimator: str = "k3"
    level_credit: str = "item"
    kl_direction: str = "reverse"
    target_in_group: bool = False
    candidate_weighting: str = "uniform"
    nll_learning_rate: float = 0.0


def grpo_loss(
    token_logprob_bgl: jax.Array,
    old_token_logprob_bgl: jax.Array,
    ref_token_logprob_bgl: jax.Array,
    advantage_bgl: jax.Array,
    *,
    clip_eps: float,
    beta: float,
    pg_weight: float = 1.0,
    kl_estimator: str = "k3",
    kl_direction: str = "reverse",
    logp_bglv: jax.Array | None = None,
    ref_logp_bglv: jax.Array | None = None,
) -> tuple[jax.Array, Metrics]:
    """-(pg_weight * J_clip - beta * KL), the negated clipped objective and KL penalty, and its
    metrics.

    J_clip = mean_{b,g} 1/L sum_t min(rho A, clip(rho, 1-eps, 1+eps) A) with the token ratio
    rho = pi / pi_old and A = advantage_bgl, float [B, G, L] per level or [B, G, 1] per
    candidate (`rl.level_credit`). KL (`kl_estimator`, static):
      "k3": mean over the candidates' tokens of k3(log pi_ref - log pi) at the chosen code. With
        beam rollouts the candidates are the policy's top G, not samples, so this is a penalty
        on the beams, not an estimate of KL(pi || pi_ref).
      "exact": mean over (candidate, level) of KL(pi_l || pi_ref,l) between the constrained
        next-code distributions after the candidate's prefix (`core.policy_gradient.exact_kl`
        of logp_bglv and ref_logp_bglv [B, G, L, V], `rollout.GroupScore.logp_bglv`): every
        prefix the group visits, weighted by how many candidates visit it. The same
        normalisation as "k3" (per token), so beta means the same for both.
    A zero weight (pg_weight or beta) drops its term from the loss (a Python-level branch: a
    NaN advantage or a -inf log-prob of a padded candidate then cannot reach the gradient).

    Metrics: policy_objective (J_clip), k3_beams (the mean k3), kl_exact (when the
    distributions are given), clip_frac (tokens where clipping binds: rho > 1+eps with A > 0 or
    rho < 1-eps with A < 0), ratio_mean.
    """
    if kl_estimator not in KL_ESTIMATORS:
        raise ValueError(f"kl_estimator {kl_estimator!r} is not one of {', '.join(KL_ESTIMATORS)}")
    if kl_direction not in KL_DIRECTIONS:
        raise ValueError(f"kl_direction {kl_direction!r} is not one of {', '.join(KL_DIRECTIONS)}")
    terms = clipped_objective(token_logprob_bgl, old_token_logprob_bgl, advantage_bgl, clip_eps)
    objective = terms.objective.mean()
    metrics = {
        "policy_objective": objective,
        "k3_beams": k3_kl(token_logprob_bgl, ref_token_logprob_bgl).mean(),
        "clip_frac": terms.binds.mean(),
        "ratio_mean": terms.ratio.mean(),
    }
    if logp_bglv is not None and ref_logp_bglv is not None:
        metrics["kl_exact"] = exact_kl(logp_bglv, ref_logp_bglv).mean()
        if kl_direction == "forward":
            metrics["kl_exact_forward"] = exact_kl(ref_logp_bglv, logp_bglv).mean()
    if kl_estimator == "exact" and "kl_exact" not in metrics:
        raise ValueError('kl_estimator "exact" needs logp_bglv and ref_logp_bglv')
    kl = (metrics["k3_beams"] if kl_estimator == "k3"
          else metrics["kl_exact_forward"] if kl_direction == "forward" else metrics["kl_exact"])
    loss = jnp.zeros((), jnp.float32)
    if beta:
        loss += beta * kl
    if pg_weight:
        loss -= pg_weight * objective
    return loss, metrics


def policy_loss(
    catalog: Catalog,
    *,
    clip_eps: float,
    beta: float,
    pg_weight: float = 1.0,
    nll_weight: float = 0.0,
    kl_estimator: str = "k3",
    kl_direction: str = "reverse",
    separate_nll: bool = False,
) -> LossFn | tuple[LossFn, LossFn]:
    """The `make_update` loss of a scored group batch: `grpo_loss` + nll_weight * NLL, or with
    `separate_nll` the two as separate terms (grpo_loss, `nll_anchor_loss`) for one optimizer
    per term (`RLSettings.nll_learning_rate`); the first then scores the G candidates only.

    Batch: history [B, H], history_mask [B, H], target [B] (the logged next item), codes_bgl
    [B, G, L], ref_token_logprob_bgl [B, G, L], advantage_bgl [B, G, L or 1], first_update
    bool []; optional: old_token_logprob_bgl [B, G, L] (pi_old of updates after the first;
    absent, pi_old is always this very pass, right only for one update per rollout batch) and
    ref_logp_bglv [B, G, L, V] (the reference's constrained distributions: the kl_exact metric,
    and needed by kl_estimator "exact").

    The requests are training examples: a transition memory leaves each one's own transition
    (its target) out, as in the rollout. One deterministic forward pass (no dropout: pi must
    equal pi_old at equal parameters) scores the G candidates and, as a (G+1)-th candidate
    sharing the encoded history, the target's SID. On the first update pi_old is pi itself,
    taken from this very pass, so the ratio is exactly 1 whatever the compiler fuses
    differently. NLL = mean_b sum_l
    -log softmax(logits_l)[target code l], the SFT loss (`train.next_item`, full softmax over
    the level vocabulary) without its dropout, so its gradient is nll_weight x the SFT
    gradient.

    Metrics: grpo_loss's, nll (always, the anchor's value even at nll_weight 0) and entropy
    (mean entropy of the constrained next-code distributions along the candidates; on the first
    update that of the rollout policy).
    """

    def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        del rng  # Scoring is deterministic: dropout would make pi differ from pi_old.
        codes_bgl = batch["codes_bgl"]
        g = codes_bgl.shape[1]
        target_bl = model.item_codes(batch["target"])
        memory = encode_requests(model, batch["history"], batch["history_mask"],
                                 batch["target"])
        logits_bklv = model.sequence_logits(
            memory, codes_bgl if separate_nll
            else jnp.concatenate([codes_bgl, target_bl[:, None]], axis=1)
        )
        score = score_logits(logits_bklv[:, :g], codes_bgl, catalog)
        logp_bgl = score.token_logprob_bgl
        own_bgl = jax.lax.stop_gradient(logp_bgl)
        old_bgl = own_bgl
        if "old_token_logprob_bgl" in batch:
            old_bgl = jnp.where(batch["first_update"], own_bgl, batch["old_token_logprob_bgl"])
        loss, metrics = grpo_loss(
            logp_bgl, old_bgl, batch["ref_token_logprob_bgl"], batch["advantage_bgl"],
            clip_eps=clip_eps, beta=beta, pg_weight=pg_weight, kl_estimator=kl_estimator,
            kl_direction=kl_direction,
            logp_bglv=score.logp_bglv, ref_logp_bglv=batch.get("ref_logp_bglv"),
        )
        metrics["entropy"] = score.entropy_bgl.mean()
        if separate_nll:
            return loss, metrics
        nll = next_item_nll(logits_bklv[:, g], target_bl).sum(-1).mean()
        if nll_weight:
            loss = loss + nll_weight * nll
        return loss, {**metrics, "nll": nll}

    if separate_nll:
        return loss_fn, nll_anchor_loss(nll_weight)
    return loss_fn


def nll_anchor_loss(nll_weight: float) -> LossFn:
    """nll_weight x the SFT loss of each request's logged target, scored alone (the encoded
    history and the target's SID: a fraction of the group's pass), as `policy_loss` scores it
    beside the candidates; metric nll. The anchor term of `policy_loss(separate_nll=True)`."""

    def loss_fn(model: nnx.Module, batch: dict, rng: jax.Array) -> tuple[jax.Array, Metrics]:
        del rng  # Deterministic, as the group's pass.
        target_bl = model.item_codes(batch["target"])
        memory = encode_requests(model, batch["history"], batch["history_mask"],
                                 batch["target"])
        logits_b1lv = model.sequence_logits(memory, target_bl[:, None])
        nll = next_item_nll(logits_b1lv[:, 0], target_bl).sum(-1).mean()
        return nll_weight * nll, {"nll": nll}

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
    channel_adv_bglk: jax.Array,
    gradient_params: str = "",
) -> jax.Array:
    """float32 [K, K] Gram matrix <g_i, g_j> of the per-channel policy gradients at pi_old.

    g_k is the gradient of the clipped policy loss (no KL term) whose advantage is channel k's
    alone, channel_adv_bglk[..., k] ([B, G, L or 1, K]: spread over levels as the update
    spreads the mixed advantage), at the rollout parameters (where the ratio is 1 and the clip
    is inactive), restricted to the parameters matching `gradient_params`. The forward pass is
    shared by the K channels (one reverse pass each). Batch: history, history_mask, target (left
    out of a transition memory, as in the rollout) and codes_bgl.
    """
    leaves, treedef = jax.tree.flatten(params)
    chosen = select_params(params, gradient_params)

    def channel_losses_k(selected: list[jax.Array]) -> jax.Array:
        full = list(leaves)
        for i, x in zip(chosen, selected, strict=True):
            full[i] = x
        model = nnx.merge(graphdef, jax.tree.unflatten(treedef, full), model_state, copy=True)
        logp_bgl = score_group(
            model, catalog, batch["history"], batch["history_mask"], batch["codes_bgl"],
            leave_out_b=batch["target"],
        ).token_logprob_bgl
        old_bgl = jax.lax.stop_gradient(logp_bgl)

        def loss(adv_bgl: jax.Array) -> jax.Array:
            return grpo_loss(logp_bgl, old_bgl, old_bgl, adv_bgl, clip_eps=1.0, beta=0.0)[0]

        return jax.vmap(loss, in_axes=-1)(channel_adv_bglk)

    jacobian = jax.jacrev(channel_losses_k)([leaves[i] for i in chosen])
    k = channel_adv_bglk.shape[-1]
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


def needs_old_pass(settings: RLSettings, channels: Sequence[RewardChannel]) -> bool:
    """Whether the RL step scores the group under pi_old in a pass of its own.

    Only when pi_old is read before (or apart from) the first update's forward pass: a reward
    channel reads the policy's log-probs (`RewardChannel.reads_logprob`, e.g. `rank`), the
    "policy" candidate weighting reads them, or updates after the first need the rollout
    policy's token log-probs. The per-channel gradients
    of popo/mgda (`channel_gram`) run their own forward pass and read nothing of it.
    """
    return (settings.updates_per_batch > 1 or settings.candidate_weighting == "policy"
            or any(c.reads_logprob for c in channels))


def make_rl_step(
    *,
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    channels: Sequence[RewardChannel],
    estimator: Estimator,
    settings: RLSettings,
    mesh: Mesh,
    state_sharding: TrainState,
    _force_old_pass: bool = False,
) -> Callable[..., tuple[TrainState, Metrics]]:
    """The jitted `rl_step(state, ref_params, channels, catalog, batch) -> (state, metrics)`.

    Args of the step: the train state (donated; extra as `init_extra` makes it), the reference
    parameters (sharded like state.params), the reward channels (a pytree of their tables,
    replicated), the catalog (replicated) and a batch of requests from
    `data.pipeline.train_iterator` (history, history_mask, target, user; split over the mesh).
    With `settings.nll_learning_rate` > 0 the optimizer is one per loss term (the RL terms',
    then the NLL anchor's; `rl.training.rl_optimizer` builds it).
    `_force_old_pass` (tests only) scores pi_old in its own pass, as every step did before
    `needs_old_pass`, even when the first update's pass can stand in for it.

    Metrics (replicated scalars): the estimator's stats (per-channel reward mean/std,
    zero-std fractions, sign agreement, A2PO lambda, weights, ...), the means over the batch's
    updates of loss, grad_norm, policy_objective, k3_beams, kl_exact, nll, clip_frac and
    ratio_mean (`policy_loss`), entropy (of the rollout policy over the candidates' tokens,
    from the pi_old pass, or without one from the first update's forward pass, which is at the
    rollout parameters), judged_frac (sparse-judging mask), target_in_rollout (the fraction of
    requests whose rollout found the target, before any `target_in_group`), candidate_ess (with
    the "policy" candidate weighting: the mean effective group size 1 / sum_g w_g^2),
    reward_fault (0/1),
    skipped (updates skipped in this batch), nonfinite_steps (running count) and learning_rate.
    """
    kinds = tuple(c.kind for c in channels)
    judge_key = jax.random.key(settings.judge_seed)
    old_pass = _force_old_pass or needs_old_pass(settings, channels)
    separate_nll = settings.nll_learning_rate > 0

    # The channels' tables are an argument of the step (device arrays, not baked-in constants).
    def rl_step(state: TrainState, ref_params: nnx.State,
                reward_channels: Sequence[RewardChannel], catalog: Catalog,
                batch: dict) -> tuple[TrainState, Metrics]:
        rng, rollout_rng = jax.random.split(state.rng)
        history_bh, mask_bh = batch["history"], batch["history_mask"]
        policy = nnx.merge(graphdef, state.params, state.model_state)
        reference = nnx.merge(graphdef, ref_params, state.model_state)

        # Rollout and scoring: pi_old is the policy that generated the group.
        # The requests are training examples: a transition memory leaves each one's own
        # transition out (rollout.py), in the rollout and in every scoring.
        target_b = batch["target"]
        group = generate(policy, catalog, history_bh, mask_bh, rollout_rng,
                         mode=settings.rollout, group_size=settings.group_size,
                         temperature=settings.temperature, leave_out_b=target_b)
        # Before any injection: how often the policy's own rollout holds the target.
        target_found_b = in_group_b(group.items_bg, target_b)
        if settings.target_in_group:
            group = with_target(group, target_b, policy.item_codes(target_b))
        ref = score_group(reference, catalog, history_bh, mask_bh, group.codes_bgl,
                          leave_out_b=target_b)
        data = {"history": history_bh, "history_mask": mask_bh, "target": batch["target"],
                "codes_bgl": group.codes_bgl, "ref_token_logprob_bgl": ref.token_logprob_bgl,
                "ref_logp_bglv": ref.logp_bglv}
        # No channel reads the log-probs without an old pass (needs_old_pass): NaN, not a guess.
        logprob_bg = jnp.full(group.items_bg.shape, jnp.nan, jnp.float32)
        old = None
        if old_pass:
            old = score_group(policy, catalog, history_bh, mask_bh, group.codes_bgl,
                              leave_out_b=target_b)
            data["old_token_logprob_bgl"] = old.token_logprob_bgl
            logprob_bg = old.logprob_bg

        # Rewards and advantages.
        judged_b = judged_mask(judge_key, batch["user"], batch["target"],
                               settings.semantic_sample_ratio)
        requests = RewardRequests.from_batch(batch, judged_b)
        rewards_bgk = reward_tensor(reward_channels, requests, group.items_bg, logprob_bg)
        fault = reward_fault(rewards_bgk, kinds)

        def spread(adv_bg: jax.Array) -> jax.Array:
            return level_advantage(settings.level_credit, adv_bg, group.codes_bgl,
                                   group.items_bg)

        gram_kk = None
        if estimator.needs_gradients:
            channel_adv_bglk = jax.vmap(spread, in_axes=-1, out_axes=-1)(
                channel_advantages(rewards_bgk))
            gram_kk = channel_gram(graphdef, state.params, state.model_state, catalog, data,
                                   channel_adv_bglk, settings.gradient_params)
        advantage_bg, estimator_state, stats = estimator(
            rewards_bgk, state.extra["estimator"], gram_kk=gram_kk
        )
        advantage_bg = candidate_advantage(
            settings.candidate_weighting, jnp.where(fault, jnp.nan, advantage_bg),
            None if old is None else old.logprob_bg, group.items_bg)
        advantage_bgl = spread(advantage_bg)
        estimator_state = jax.tree.map(lambda new, old: jnp.where(fault, old, new),
                                       estimator_state, state.extra["estimator"])

        # Updates: pi moves away from pi_old over the batch's updates.
        loss_fn = policy_loss(catalog, clip_eps=settings.clip_eps, beta=settings.beta,
                              pg_weight=settings.pg_weight, nll_weight=settings.nll_weight,
                              kl_estimator=settings.kl_estimator,
                              kl_direction=settings.kl_direction,
                              separate_nll=separate_nll)
        update = make_update(graphdef, loss_fn, optimizer)

        def one_update(state: TrainState, first: jax.Array) -> tuple[TrainState, Metrics]:
            return update(state, {**data, "advantage_bgl": advantage_bgl, "first_update": first})

        first_u = jnp.arange(settings.updates_per_batch) == 0
        new_state, per_update = jax.lax.scan(one_update, state.replace(rng=rng), first_u)
        extra = {"estimator": estimator_state,
                 "totals": _accumulate(state.extra["totals"], stats, fault)}
        new_state = new_state.replace(step=state.step + 1, extra=extra)

        metrics = {
            **stats,
            **{k: per_update[k].mean() for k in UPDATE_MEANS if k in per_update},
            # The first update's pass is at the rollout parameters: the entropy of pi_old too.
            "entropy": (per_update["entropy"][0] if old is None
                        else old.entropy_bgl.mean()),
            "judged_frac": judged_b.mean(),
            "target_in_rollout": target_found_b.mean(),
            "reward_fault": fault.astype(jnp.int32),
            "skipped": per_update["skipped"].sum(),
            "nonfinite_steps": new_state.nonfinite_steps,
        }
        if settings.candidate_weighting == "policy":
            # How many candidates the weighted update effectively sees per request: 1 / sum w^2.
            w_bg = policy_weights(old.logprob_bg, group.items_bg >= 0)
            metrics["candidate_ess"] = (1.0 / jnp.maximum((w_bg * w_bg).sum(-1), 1e-12)).mean()
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
