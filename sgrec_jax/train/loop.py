"""The loop skeleton everything that trains shares: SFT, SASRec, the pCTR models and RL (in a run
directory), and the judge's small in-memory fits (the PSJ aggregator, Bradley-Terry, the scorer).

big_vision style: resume from the newest checkpoint in the run directory, then step -> log ->
(every `eval_every` steps) validate, checkpoint, early-stop. The caller builds the train state
and the jitted step (pure, donated, explicit shardings: `train_state.make_train_step`,
`rl.grpo.make_rl_step`); everything with side effects (checkpoints, metric files, the progress
line, SIGTERM, pauses) lives here, outside it. The loop's progress (best validation metric,
evaluations since it improved, seconds spent training) is saved with each checkpoint, so a run
killed at any point resumes on the same trajectory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import numpy as np
from absl import logging

from sgrec_jax.core.files import as_path
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.metric_writer import MetricWriter, ProgressLogger
from sgrec_jax.train.train_state import TrainState

# (state, batch) -> (new state, metrics); the batch as `data` yields it, the metrics on device or
# host. Calls jitted steps (pure, donating the state); the loop fetches metrics only to log them.
StepFn = Callable[[TrainState, Any], tuple[TrainState, Mapping[str, Any]]]
# The state's validation metrics by name; non-scalar values (e.g. per_user) are dropped.
ValidateFn = Callable[[TrainState], Mapping[str, Any]]


class Preempted(Exception):
    """Training stopped on SIGTERM or a pause after saving a checkpoint; rerunning resumes it."""


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """How long to train and when to log, validate and checkpoint.

    max_steps_per_run: 0 = no limit; otherwise save and raise Preempted after that many steps in
    this invocation, so a long run can be spread over time-limited sessions. best_metric: a key
    `validate` returns (larger is better) whose best checkpoint (the latest of equal ones) is
    kept and restored at the end, or None to keep the last state; patience: evaluations of
    best_metric without improvement before stopping (0 = never). validate_start: also validate
    the state a fresh run starts from (step 0, checkpointed like any validated step), so with
    best_metric the starting point is a candidate and the run never returns a state worse on
    validation than it began with (RL from an SFT policy); a resumed run has done it already.
    """

    num_steps: int
    log_every: int
    eval_every: int = 1
    keep_checkpoints: int = 1
    max_steps_per_run: int = 0
    best_metric: str | None = None
    patience: int = 0
    validate_start: bool = False
    log_keys: tuple[str, ...] = ("loss",)


@dataclasses.dataclass(frozen=True)
class LoopOutcome:
    """The state the loop ends with (the best one when tracking best_metric) and its progress."""

    state: TrainState
    last_step: int
    best_step: int
    best_metric: float
    stopped_early: bool
    # Seconds spent in training steps (input pipeline included; validation and checkpoints
    # excluded), summed over every invocation of the run.
    train_seconds: float
    # Host copies of the state at last_step's running counters (nonfinite_steps, `extra`): they
    # describe the whole run even when the best state is the one returned.
    last_nonfinite_steps: int = 0
    last_extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if np.ndim(v) == 0}


def run_loop(
    *,
    state: TrainState,
    step_fn: StepFn,
    data: Iterator[Any],
    settings: LoopSettings,
    validate: ValidateFn | None = None,
    run_dir: str | os.PathLike | None = None,
) -> LoopOutcome:
    """Steps `state` to settings.num_steps on the batches of `data`, validating every eval_every
    steps (when `validate` is given).

    With a run_dir the run resumes from run_dir/checkpoints (`data` must then be a checkpointable
    Grain iterator), checkpoints after each validation, writes metrics to run_dir and raises
    Preempted after saving on SIGTERM or when max_steps_per_run is reached. Without one (small
    in-memory fits) nothing touches the disk and the run always starts afresh.
    """
    s = settings
    if run_dir is None and (s.best_metric is not None or s.max_steps_per_run):
        raise ValueError("best_metric and max_steps_per_run need a run_dir to checkpoint to")
    metric_name = None if s.best_metric is None else f"valid/{s.best_metric}"
    progress: dict[str, Any] = {"best_metric": float("-inf"), "best_step": 0, "bad_evals": 0,
                                "train_seconds": 0.0}
    step = int(state.step)
    resumed = False
    with contextlib.ExitStack() as on_disk:
        checkpointer = writer = None
        if run_dir is not None:
            best = {} if metric_name is None else {"best_metric": metric_name, "best_mode": "max"}
            checkpointer = on_disk.enter_context(Checkpointer(
                as_path(run_dir) / "checkpoints", keep=s.keep_checkpoints,
                save_interval_steps=s.eval_every, **best))
            checkpointer.install_sigterm_handler()
            state, metadata = checkpointer.restore_or_init(state, data)
            step = int(state.step)
            resumed = metadata is not None
            if metadata is not None:
                progress.update(metadata.get("progress", {}))
                if metric_name is None:
                    logging.info("resumed at step %d", step)
                else:
                    logging.info("resumed at step %d (best %s %.4f at step %d)", step,
                                 metric_name, progress["best_metric"], progress["best_step"])
            # A fresh run drops every record (a run killed before its first checkpoint leaves
            # records, step 0's validation among them, that the restarted run replaces).
            writer = on_disk.enter_context(
                MetricWriter(run_dir, purge_step=step + 1 if resumed else step))
        start_step = step
        stopped_early = s.patience > 0 and progress["bad_evals"] >= s.patience

        def validate_and_save(step: int, state) -> bool:
            """Validates `state`, tracks the best metric, writes and checkpoints; whether to stop
            early."""
            report = _scalars(validate(state))
            values = " ".join(f"{k} {v:.4f}" for k, v in report.items())
            saved_metrics, stop_now = None, False
            if metric_name is None:
                logging.info("step %d valid: %s", step, values)
            else:
                if s.best_metric not in report:
                    raise ValueError(f"best_metric {s.best_metric!r} is not among the validation "
                                     f"metrics {sorted(report)}")
                value = report[s.best_metric]
                improved = value > progress["best_metric"]
                # A tie is no improvement (patience counts it) but moves the best to this step:
                # the checkpointer keeps the latest of equal checkpoints, so the best step's
                # checkpoint is always kept.
                if value >= progress["best_metric"]:
                    progress.update(best_metric=value, best_step=step)
                progress["bad_evals"] = 0 if improved else progress["bad_evals"] + 1
                stop_now = s.patience > 0 and progress["bad_evals"] >= s.patience
                saved_metrics = {metric_name: value}
                logging.info("step %d valid: %s (best %.4f at step %d)", step, values,
                             progress["best_metric"], progress["best_step"])
            if writer is not None:
                writer.write_scalars(step, {f"valid/{k}": v for k, v in report.items()})
                checkpointer.save(step, state, data, metadata={"progress": dict(progress)},
                                  metrics=saved_metrics, force=True)
            return stop_now

        def stop(step: int, state, why: str) -> None:
            jax.block_until_ready(state)
            progress["train_seconds"] += time.perf_counter() - step_clock
            checkpointer.save(step, state, data, metadata={"progress": dict(progress)}, force=True)
            checkpointer.wait_until_finished()
            raise Preempted(f"{why}: saved step {step} in {run_dir}; run the same command "
                            "again to resume")

        if validate is not None and s.validate_start and step == 0 and not resumed:
            stopped_early = validate_and_save(step, state)
        logger = ProgressLogger(s.num_steps, every=s.log_every, keys=s.log_keys)
        step_clock = time.perf_counter()
        while step < s.num_steps and not stopped_early:
            state, metrics = step_fn(state, next(data))
            step += 1
            if step % s.log_every == 0 or step == s.num_steps:
                metrics = jax.device_get(metrics)
                if writer is not None:
                    writer.write_scalars(step, {f"train/{k}": v for k, v in metrics.items()})
                logger.log(step, metrics)
            if validate is not None and (step % s.eval_every == 0 or step == s.num_steps):
                jax.block_until_ready(state)
                progress["train_seconds"] += time.perf_counter() - step_clock
                stopped_early = validate_and_save(step, state)
                step_clock = time.perf_counter()
            if checkpointer is None:
                continue
            # After validation: a run resumed from this step never redoes that step's.
            if checkpointer.should_stop(step):
                stop(step, state, "preempted")
            paused = s.max_steps_per_run and step - start_step >= s.max_steps_per_run
            if paused and step < s.num_steps and not stopped_early:
                stop(step, state, "paused")
        if stopped_early:
            logging.info("early stop: no %s improvement in %d evaluations", metric_name,
                         s.patience)
        last_nonfinite_steps, last_extra = jax.device_get((state.nonfinite_steps, state.extra))
        if checkpointer is not None:
            checkpointer.wait_until_finished()
            # best_metric stays -inf until a validation yields a comparable value.
            tracked = metric_name is not None and progress["best_metric"] > float("-inf")
            if tracked and progress["best_step"] != step:
                state = checkpointer.restore(progress["best_step"], state)
    return LoopOutcome(
        state=state, last_step=step, best_step=progress["best_step"],
        best_metric=progress["best_metric"], stopped_early=stopped_early,
        train_seconds=float(progress["train_seconds"]),
        last_nonfinite_steps=int(last_nonfinite_steps), last_extra=last_extra,
    )
