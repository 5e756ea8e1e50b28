"""The supervised training loop shared by the SID generator (SFT) and the SASRec baseline.

One loop, big_vision style: build the state on the mesh, resume from the newest checkpoint in the
run directory, then step -> log -> (every `eval_every` steps) validate, checkpoint, early-stop.
The jitted step is `train_state.make_train_step` (pure, donated, explicit shardings); everything
with side effects (I/O, logging, checkpoints) lives here, outside it. Early-stopping state (best
validation metric, evaluations since it improved) is saved with each checkpoint, so a run killed
at any point resumes on the same trajectory.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.shards import ShardedExamples
from sgrec_jax.data.sources import train_iterator_for
from sgrec_jax.data.split import Examples
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.metric_writer import MetricWriter, ProgressLogger
from sgrec_jax.train.train_state import LossFn, create_train_state, make_optimizer, make_train_step

# Evaluates a model on examples; returns scalar metrics by name (may hold more, e.g. per_user).
EvalFn = Callable[[nnx.Module, Examples], Mapping[str, Any]]


class Preempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; rerunning resumes it."""


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
        return self.last_step * batch_size / self.train_seconds if self.train_seconds else float("nan")


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


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


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
    train_step = make_train_step(graphdef, loss_fn, optimizer, mesh, state_sharding)
    data = train_iterator_for(train, batch_size=config.batch_size, seed=seed,
                              length_buckets=tuple(config.get("length_buckets", ())))
    metric_name = f"valid/{config.best_metric}"
    progress: dict[str, Any] = {"best_metric": float("-inf"), "best_step": 0, "bad_evals": 0,
                                "train_seconds": 0.0}

    with Checkpointer(
        os.path.join(run_dir, "checkpoints"), keep=config.keep_checkpoints,
        best_metric=metric_name, best_mode="max", save_interval_steps=config.eval_every,
    ) as checkpointer:
        checkpointer.install_sigterm_handler()
        state, metadata = checkpointer.restore_or_init(state, data)
        step = start_step = int(state.step)
        if metadata is not None:
            progress.update(metadata["progress"])
            logging.info("resumed at step %d (best %s %.4f at step %d)", step, metric_name,
                         progress["best_metric"], progress["best_step"])
        stopped_early = config.patience > 0 and progress["bad_evals"] >= config.patience

        def stop(step: int, state, why: str) -> None:
            jax.block_until_ready(state)
            progress["train_seconds"] += time.perf_counter() - step_clock
            checkpointer.save(step, state, data, metadata={"progress": dict(progress)}, force=True)
            checkpointer.wait_until_finished()
            raise Preempted(f"{why}: saved step {step} in {run_dir}; run the same command "
                            "again to resume")

        def current_model(state) -> nnx.Module:
            return nnx.merge(graphdef, state.params, state.model_state)

        # Also from step 0: a run killed before its first checkpoint leaves records that the
        # restarted run replaces.
        with MetricWriter(run_dir, purge_step=step + 1) as writer:
            logger = ProgressLogger(config.num_steps, every=config.log_every,
                                    keys=("loss", "grad_norm"))
            step_clock = time.perf_counter()
            while step < config.num_steps and not stopped_early:
                batch = host_to_global(next(data), mesh)
                state, metrics = train_step(state, batch)
                step += 1
                if step % config.log_every == 0 or step == config.num_steps:
                    metrics = jax.device_get(metrics)
                    writer.write_scalars(step, {f"train/{k}": v for k, v in metrics.items()})
                    logger.log(step, metrics)
                if step % config.eval_every == 0 or step == config.num_steps:
                    jax.block_until_ready(state)
                    progress["train_seconds"] += time.perf_counter() - step_clock
                    eval_metrics = _scalars(evaluate(current_model(state), valid))
                    value = eval_metrics[config.best_metric]
                    if value > progress["best_metric"]:
                        progress.update(best_metric=value, best_step=step, bad_evals=0)
                    else:
                        progress["bad_evals"] += 1
                    stopped_early = config.patience > 0 and progress["bad_evals"] >= config.patience
                    writer.write_scalars(step, {f"valid/{k}": v for k, v in eval_metrics.items()})
                    logging.info("step %d: %s (best %.4f at step %d)", step,
                                 " ".join(f"{k} {v:.4f}" for k, v in eval_metrics.items()),
                                 progress["best_metric"], progress["best_step"])
                    checkpointer.save(
                        step, state, data, metadata={"progress": dict(progress)},
                        metrics={metric_name: value}, force=True,
                    )
                    step_clock = time.perf_counter()
                # After validation: a run resumed from this step never redoes that step's.
                if checkpointer.should_stop(step):
                    stop(step, state, "preempted")
                paused = config.max_steps_per_run and step - start_step >= config.max_steps_per_run
                if paused and step < config.num_steps and not stopped_early:
                    stop(step, state, "paused")
            if stopped_early:
                logging.info("early stop: no %s improvement in %d evaluations", metric_name,
                             config.patience)
        checkpointer.wait_until_finished()
        if progress["best_step"] and progress["best_step"] != step:
            state = checkpointer.restore(progress["best_step"], state)
    return TrainOutcome(
        model=current_model(state), best_step=progress["best_step"],
        best_metric=progress["best_metric"], last_step=step, stopped_early=stopped_early,
        train_seconds=float(progress.get("train_seconds", 0.0)),
    )
