"""Supervised training of a model on next-item examples: the SID generator (SFT), the SASRec
baseline and the pCTR reward models.

Builds the train state on the mesh, the jitted step (`train_state.make_train_step`: pure,
donated, explicit shardings) and the data iterator, and hands them to the loop skeleton
(`train.loop.run_loop`: resume, step, validate, checkpoint, early-stop, pause, SIGTERM). The model
that comes back is the one at the best validation step.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.shards import ShardedExamples
from sgrec_jax.data.sources import train_iterator_for
from sgrec_jax.data.split import Examples
from sgrec_jax.train.loop import LoopSettings, run_loop
from sgrec_jax.train.train_state import LossFn, create_train_state, make_optimizer, make_train_step

# Evaluates a model on examples; returns scalar metrics by name (may hold more, e.g. per_user).
EvalFn = Callable[[nnx.Module, Examples], Mapping[str, Any]]


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What the loop leaves: the model at the best validation step and how it got there."""

    model: nnx.Module
    best_step: int
    best_metric: float
    last_step: int
    stopped_early: bool
    # Seconds spent in training steps (input pipeline included; validation and checkpoints
    # excluded), summed over every invocation of the run: the cost of a recipe.
    train_seconds: float = 0.0

    def examples_per_second(self, batch_size: int) -> float:
        """Training throughput over the whole run (NaN when no step was timed)."""
        if not self.train_seconds:
            return float("nan")
        return self.last_step * batch_size / self.train_seconds


def check_training_config(config: ConfigDict, section: str) -> None:
    """Fails before any work on settings the loop cannot run with (`section` names them)."""
    problems = []
    if min(config.batch_size, config.num_steps, config.eval_every, config.log_every) < 1:
        problems.append("batch_size, num_steps, eval_every and log_every must be >= 1")
    if not 0 <= config.warmup_steps < config.num_steps:
        problems.append(f"warmup_steps {config.warmup_steps} must be in [0, num_steps "
                        f"{config.num_steps})")
    if config.learning_rate <= 0:
        problems.append(f"learning_rate {config.learning_rate} must be > 0")
    if config.patience < 0 or config.max_steps_per_run < 0:
        problems.append("patience and max_steps_per_run must be >= 0")
    buckets = list(config.get("length_buckets", ()))
    if buckets and (min(buckets) < 1 or any(b <= a for a, b in zip(buckets, buckets[1:]))):
        problems.append(f"length_buckets {buckets} must be ascending history widths >= 1")
    if problems:
        raise ValueError(f"{section}: " + "; ".join(problems))


def train_supervised(
    *,
    model: nnx.Module,
    loss_fn: LossFn,
    evaluate: EvalFn,
    train: Examples | ShardedExamples,
    valid: Examples,
    config: ConfigDict,
    mesh_config: ConfigDict,
    run_dir: str | os.PathLike,
    seed: int,
) -> TrainOutcome:
    """Trains `model` on `train`, validating on `valid`; resumes from `run_dir` if it holds a run.

    `train` is in memory or ArrayRecord shards (data/sources.py): the same loop, batches and
    checkpointed data position either way.

    config fields: batch_size, num_steps, learning_rate, warmup_steps, weight_decay, clip_norm,
    eval_every, patience (evaluations without improvement before stopping; 0 = never),
    best_metric (a key `evaluate` returns, larger is better), log_every, keep_checkpoints,
    max_steps_per_run (0 = no limit: otherwise save and raise Preempted after that many steps
    in this invocation, so a long run can be spread over time-limited sessions), and optionally
    length_buckets (history widths that batch examples of similar history length together;
    see sgrec_jax/data/pipeline.py; the model must accept histories narrower than max_history).
    """
    mesh = make_mesh(data=mesh_config.data, fsdp=mesh_config.fsdp)
    optimizer = make_optimizer(
        config.learning_rate, config.warmup_steps, config.num_steps,
        weight_decay=config.weight_decay, clip_norm=config.clip_norm,
    )
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(seed), mesh
    )
    data = train_iterator_for(train, batch_size=config.batch_size, seed=seed,
                              length_buckets=tuple(config.get("length_buckets", ())))

    def current_model(state) -> nnx.Module:
        return nnx.merge(graphdef, state.params, state.model_state)

    train_step = make_train_step(graphdef, loss_fn, optimizer, mesh, state_sharding)
    outcome = run_loop(
        state=state, data=data, step_fn=lambda state, batch: train_step(
            state, host_to_global(batch, mesh)),
        validate=lambda state: evaluate(current_model(state), valid),
        settings=LoopSettings(
            num_steps=config.num_steps, log_every=config.log_every, eval_every=config.eval_every,
            keep_checkpoints=config.keep_checkpoints, max_steps_per_run=config.max_steps_per_run,
            best_metric=config.best_metric, patience=config.patience,
            log_keys=("loss", "grad_norm"),
        ),
        run_dir=run_dir,
    )
    return TrainOutcome(
        model=current_model(outcome.state), best_step=outcome.best_step,
        best_metric=outcome.best_metric, last_step=outcome.last_step,
        stopped_early=outcome.stopped_early, train_seconds=outcome.train_seconds,
    )
