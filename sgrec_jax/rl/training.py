"""RL training of the generator: GRPO-family updates of a start policy through the loop skeleton.

Each step draws `rl.batch_size` training requests, rolls out G candidates per request, scores
them with the reward channels and the advantage estimator, and applies `updates_per_batch`
clipped updates with a KL penalty to the frozen start policy and, optionally, the SFT loss of
the logged targets as an anchor (`rl.grpo.make_rl_step`, one jitted call). `train.loop.run_loop`
owns the rest: checkpoints (train state with the estimator's state, data position) in
RUN_DIR/checkpoints and resuming from them, validation every
`eval_every` steps (`rl.evaluation.evaluate_policy`), metrics and the progress log in RUN_DIR,
pauses and SIGTERM. With `rl.best_metric` the start policy is validated too (step 0) and the
policy returned is the best on validation among it and the validated steps (early stopping after
`rl.patience` validations without improvement), so RL never hands back a policy that validates
worse than the one it started from; otherwise it is the final one.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.shards import ShardedExamples
from sgrec_jax.data.sources import train_iterator_for
from sgrec_jax.data.split import Examples
from sgrec_jax.rewards.channel import RewardChannel
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
from sgrec_jax.rl.evaluation import evaluate_policy
from sgrec_jax.rl.grpo import RLSettings, init_extra, make_rl_step, select_params
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.loop import LoopSettings, run_loop
from sgrec_jax.train.per_term_optimizer import per_term_optimizer
from sgrec_jax.train.train_state import create_train_state, make_optimizer


def rl_optimizer(rl: ConfigDict) -> optax.GradientTransformation:
    """The optimizer of `config.rl`: AdamW (clipped, warmup then cosine) at rl.learning_rate over
    the whole loss, or with rl.nll_learning_rate > 0 one such optimizer for the RL terms and one
    at rl.nll_learning_rate for the NLL anchor (`train.per_term_optimizer`)."""
    updates = rl.updates_per_batch

    def adamw(learning_rate: float) -> optax.GradientTransformation:
        return make_optimizer(learning_rate, rl.warmup_steps * updates, rl.num_steps * updates,
                              weight_decay=rl.weight_decay, clip_norm=rl.clip_norm)

    if rl.get("nll_learning_rate", 0.0) > 0:
        return per_term_optimizer([adamw(rl.learning_rate), adamw(rl.nll_learning_rate)])
    return adamw(rl.learning_rate)


def train_rl(config: ConfigDict, num_items: int, model: nnx.Module, catalog: Any,
             channels: list[RewardChannel], eval_channels: list[RewardChannel],
             train: Examples | ShardedExamples,
             valid: Examples, run_dir: str | os.PathLike) -> tuple[nnx.Module, dict[str, Any]]:
    """Runs (or resumes) the RL steps of `config.rl` from the start policy `model`, rewarded by
    `channels`; returns the policy (the best on validation with rl.best_metric, else the final
    one) and the training summary (rl/last_step, rl/best_step: the step of the returned policy,
    rl/best_valid_metric: its rl.best_metric (NaN without one), rl/stopped_early,
    rl/nonfinite_steps, rl/sign_agreement: business/semantic sign agreement averaged over
    steps). Needs no pipeline, so the reliability tests run this very loop on a tiny generator."""
    rl = config.rl
    estimator = ESTIMATORS.build(rl.estimator, [ChannelSpec.of(c) for c in channels],
                                 **rl.estimator_options.get(rl.estimator, {}))
    mesh = make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
    updates = rl.updates_per_batch
    optimizer = rl_optimizer(rl)
    # The reference is a copy made before the state exists: the step donates the state.
    ref_params = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(config.seed), mesh, extra=init_extra(estimator)
    )
    ref_params = jax.device_put(ref_params, state_sharding.params)
    if estimator.needs_gradients:
        select_params(state.params, rl.gradient_params)  # fails now on a pattern matching nothing
    settings = RLSettings(
        group_size=rl.group_size, rollout=rl.rollout, temperature=rl.temperature,
        updates_per_batch=updates, clip_eps=rl.clip_eps, beta=rl.beta,
        semantic_sample_ratio=rl.semantic_sample_ratio, judge_seed=config.seed,
        gradient_params=rl.gradient_params, pg_weight=rl.pg_weight, nll_weight=rl.nll_weight,
        kl_estimator=rl.kl_estimator, level_credit=rl.level_credit,
        kl_direction=rl.kl_direction, target_in_group=rl.target_in_group,
        candidate_weighting=rl.candidate_weighting, nll_learning_rate=rl.nll_learning_rate,
    )
    rl_step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                           estimator=estimator, settings=settings, mesh=mesh,
                           state_sharding=state_sharding)
    data = train_iterator_for(train, batch_size=rl.batch_size, seed=config.seed)

    def policy(state) -> nnx.Module:
        return nnx.merge(graphdef, state.params, state.model_state)

    def validate(state) -> dict[str, float]:
        _, report, _ = evaluate_policy(policy(state), catalog, valid, eval_channels, config,
                                       num_items)
        return report

    outcome = run_loop(
        state=state, data=data, validate=validate, run_dir=run_dir,
        step_fn=lambda state, batch: rl_step(state, ref_params, channels, catalog,
                                             host_to_global(batch, mesh)),
        settings=LoopSettings(
            num_steps=rl.num_steps, log_every=rl.log_every, eval_every=rl.eval_every,
            keep_checkpoints=rl.keep_checkpoints, max_steps_per_run=rl.max_steps_per_run,
            best_metric=rl.best_metric or None, patience=rl.patience,
            validate_start=bool(rl.best_metric),
            log_keys=("loss", "k3_beams", "kl_exact", "nll", "clip_frac", "entropy"),
        ),
    )
    state = outcome.state
    totals = outcome.last_extra["totals"]  # of the whole run, not of a restored best state
    agreement_steps = int(totals["sign_agreement_steps"])
    summary = {
        "rl/last_step": outcome.last_step,
        "rl/best_step": outcome.best_step if rl.best_metric else outcome.last_step,
        "rl/best_valid_metric": outcome.best_metric if rl.best_metric else math.nan,
        "rl/stopped_early": outcome.stopped_early,
        "rl/nonfinite_steps": outcome.last_nonfinite_steps,
        "rl/sign_agreement": (float(totals["sign_agreement_sum"]) / agreement_steps
                              if agreement_steps else math.nan),
    }
    return policy(state), summary


def restore_policy(config: ConfigDict, start_model: nnx.Module, run_dir: str | os.PathLike,
                   step: int) -> nnx.Module:
    """The policy a finished or stopped rl run (config.rl, its RUN_DIR) saved at `step`, for
    analyses that need another state than the one the run reported (e.g. validation and test of
    the final state beside the start policy, experiments/valid_test_shift.py).

    The restore target is built as train_rl builds it, from the run's start policy: the same
    optimizer and estimator state structure (which depends on the number of channels only, so the
    channels are described by name, the first as business and the rest as semantic, as the rl
    configs list them, without building reward models). ValueError when no checkpoint of that
    step is kept."""
    rl = config.rl
    specs = [ChannelSpec(name, 0.0, 1.0, "business" if i == 0 else "semantic")
             for i, name in enumerate(rl.channels)]
    estimator = ESTIMATORS.build(rl.estimator, specs, **rl.estimator_options.get(rl.estimator, {}))
    optimizer = rl_optimizer(rl)
    mesh = make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
    graphdef, target, _ = create_train_state(start_model, optimizer, jax.random.key(config.seed),
                                             mesh, extra=init_extra(estimator))
    checkpoints = os.path.join(os.fspath(run_dir), "checkpoints")
    with Checkpointer(checkpoints) as ckpt:
        kept = ckpt.all_steps()
        if step not in kept:
            raise ValueError(f"{checkpoints} keeps no checkpoint of step {step} (kept: "
                             f"{sorted(kept)})")
        state = ckpt.restore(step, target)
    return nnx.merge(graphdef, state.params, state.model_state)
