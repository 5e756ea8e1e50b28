"""Orbax checkpoints of a run: the sharded train state, the data iterator position, metadata.

    with Checkpointer(workdir / "checkpoints", keep=3, best_metric="valid/ndcg@10") as ckpt:
        ckpt.install_sigterm_handler()
        state, metadata = ckpt.restore_or_init(state, data_iterator)   # resumes if it can
        for step in range(int(state.step) + 1, total_steps + 1):
            state, metrics = train_step(state, host_to_global(next(data_iterator), mesh))
            ckpt.save(step, state, data_iterator, metadata=run_info)    # every save_interval
            if ckpt.should_stop(step):                                  # SIGTERM: saved, stop
                break
    # leaving the block waits for the last asynchronous save

Each step directory holds `state` (the TrainState pytree, written by every process for its own
shards), `data` (the Grain iterator state, one JSON per process) and `metadata` (a JSON the caller
chooses, plus the device count it was saved on). The state is restored onto the shardings of the
state the caller passes in, so a checkpoint written on N devices restores on M.

Kept: the `keep` latest checkpoints (for resuming, and to fall back on if the latest cannot be
read) plus the `keep_best` best by `best_metric` among those saved with metrics.

The directory may be local or on GCS (gs://bucket/...): Orbax writes local checkpoints to a
temporary directory it renames when complete, and GCS ones in place, marking each complete with a
commit_success.txt file (see the README for the packages gs:// needs).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from sgrec_jax.core.files import as_path
from sgrec_jax.train.train_state import TrainState

STATE, DATA, METADATA = "state", "data", "metadata"
# A checkpoint that failed to restore is moved to "<step><suffix>", a name Orbax does not list,
# so training can save that step again and a later resume does not trip on it twice.
UNRESTORABLE_SUFFIX = ".unrestorable"


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist but none of them can be restored into the given state."""


class Checkpointer:
    """An Orbax CheckpointManager for one training run, with resume and preemption handling."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        best_metric: str | None = None,
        best_mode: str = "max",
        keep_best: int = 1,
        save_interval_steps: int = 1,
        async_save: bool = True,
    ):
        """
        Args:
          directory: where step directories go (created if missing).
          keep: how many of the latest checkpoints to keep (>= 1).
          best_metric: a key of the `metrics` given to `save`; the `keep_best` checkpoints best by
            it are kept as well. None keeps only the latest.
          best_mode: "max" or "min": which direction of best_metric is better.
          keep_best: how many of the best checkpoints to keep.
          save_interval_steps: `save` writes only at multiples of this, unless forced or
            preempted.
          async_save: write in a background thread; `save` returns once the arrays are copied
            to host memory.
        """
        if keep < 1 or keep_best < 1 or save_interval_steps < 1:
            raise ValueError(
                f"keep, keep_best and save_interval_steps must be >= 1, got {keep}, "
                f"{keep_best}, {save_interval_steps}"
            )
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = as_path(directory)
        self.best_metric = best_metric
        policies_lib = ocp.checkpoint_managers
        keep_policies: list[policies_lib.PreservationPolicy] = [policies_lib.LatestN(n=keep)]
        best_fn = None
        if best_metric is not None:
            def best_fn(metrics: Mapping[str, float]) -> float:
                return float(metrics[best_metric])

            keep_policies.append(
                policies_lib.BestN(
                    get_metric_fn=best_fn, reverse=best_mode == "min", n=keep_best,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            # Multiples of the interval, and preemption; not Orbax's extra save at the first step.
            save_decision_policy=policies_lib.AnySavePolicy([
                policies_lib.FixedIntervalPolicy(save_interval_steps),
                policies_lib.PreemptionCheckpointingPolicy(),
            ]),
            preservation_policy=policies_lib.AnyPreservationPolicy(keep_policies),
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._sigterm_received = False
        self._previous_sigterm_handler: Any = None

    # -- saving ---------------------------------------------------------------------------------

    def save(
        self,
        step: int,
        state: TrainState,
        data_iterator: grain.DatasetIterator | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """Saves at `step` if it is a save step, `force` is set or preemption was requested.

        `metrics` (scalars) rank the checkpoint by best_metric and must then contain it; they are
        recorded only when a best_metric is set.
        `metadata` must be JSON-serialisable. Returns whether a save was started; a step that is
        already the latest checkpoint is not saved again (e.g. a forced final save right after
        an interval save).
        """
        if step == self._manager.latest_step():
            return False
        if metrics is not None:
            metrics = {k: float(v) for k, v in metrics.items()}
            if self.best_metric is not None and self.best_metric not in metrics:
                raise ValueError(
                    f"metrics {sorted(metrics)} lack the best_metric {self.best_metric!r}"
                )
        record = {
            **(metadata or {}),
            "saved_on": {
                "device_count": jax.device_count(), "process_count": jax.process_count()
            },
        }
        items: dict[str, Any] = {
            STATE: ocp.args.StandardSave(state), METADATA: ocp.args.JsonSave(record)
        }
        if data_iterator is not None:
            items[DATA] = grain.checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(
            step, args=ocp.args.Composite(**items), metrics=metrics,
            force=force or self._sigterm_received,
        )

    def wait_until_finished(self) -> None:
        """Blocks until every asynchronous save has been written and committed."""
        self._manager.wait_until_finished()

    # -- restoring ------------------------------------------------------------------------------

    def restore_or_init(
        self, init_state: TrainState, data_iterator: grain.DatasetIterator | None = None
    ) -> tuple[TrainState, dict[str, Any] | None]:
        """The latest restorable checkpoint, or `init_state` if there is none.

        `init_state` fixes the target: the checkpoint's arrays are read onto its shapes, dtypes
        and shardings (so the device count may differ from the one that wrote them). The data
        iterator, built with the same settings as the saved one, is moved to the saved position.
        A checkpoint that fails to read (e.g. a truncated or missing file) is logged as a
        warning and the previous one is tried; once one restores, the failed newer ones are set
        aside (renamed to <step>.unrestorable, kept for inspection) so their steps can be saved
        again.

        Returns:
          (state, metadata): metadata as given to `save` plus "saved_on" (device and process
          counts); None when starting fresh.

        Raises:
          CheckpointRestoreError: checkpoints exist but none can be restored, e.g. because the
            model changed; training from scratch over them would silently lose the run.
        """
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state)
        steps = sorted(self._manager.all_steps(), reverse=True)
        failed: list[int] = []
        for step in steps:
            items: dict[str, Any] = {
                STATE: ocp.args.StandardRestore(target), METADATA: ocp.args.JsonRestore()
            }
            if data_iterator is not None:
                items[DATA] = grain.checkpoint.CheckpointRestore(data_iterator)
            try:
                restored = self._manager.restore(step, args=ocp.args.Composite(**items))
            except Exception as error:  # Orbax and TensorStore raise bare Exceptions.
                if step == steps[-1]:
                    raise CheckpointRestoreError(
                        f"none of the checkpoints {sorted(steps)} in {self.directory} can be "
                        f"restored; the oldest failed with: {error}"
                    ) from error
                logging.warning(
                    "checkpoint %d in %s cannot be restored, falling back to the previous one: "
                    "%s", step, self.directory, error,
                )
                failed.append(step)
                continue
            # Only now, with an older one restored, are the failures known not to be a config
            # mismatch that would fail every checkpoint.
            for bad in failed:
                self._set_aside(bad)
            metadata = dict(restored[METADATA])
            logging.info(
                "restored step %d from %s (saved on %s devices, restored on %d)", step,
                self.directory, metadata.get("saved_on", {}).get("device_count"),
                jax.device_count(),
            )
            return restored[STATE], metadata
        return init_state, None

    def restore(self, step: int, init_state: TrainState) -> TrainState:
        """The train state saved at `step`, read onto `init_state`'s shapes and shardings."""
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, init_state)
        restored = self._manager.restore(
            step, args=ocp.args.Composite(**{STATE: ocp.args.StandardRestore(target)})
        )
        return restored[STATE]

    def _set_aside(self, step: int) -> None:
        path = self.directory / str(step)
        if jax.process_index() == 0:  # On GCS a rename copies every object of the step.
            path.rename(path.with_name(path.name + UNRESTORABLE_SUFFIX))
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"set aside checkpoint {step}")
        self._manager.reload()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def best_step(self) -> int | None:
        """The step best by best_metric (the latest step when there is no best_metric)."""
        return self._manager.best_step()

    # -- preemption -----------------------------------------------------------------------------

    def install_sigterm_handler(self) -> None:
        """On SIGTERM, save at the next `save` call (whatever the interval) instead of dying.

        Single process only: with several processes JAX's preemption service catches the
        signal and agrees a step on all of them, which `should_stop` and `save` consult.
        Call from the main thread; `close` puts the previous handler back.
        """
        if jax.process_count() > 1:
            logging.info("multi-process run: SIGTERM is left to JAX's preemption service")
            return
        self._previous_sigterm_handler = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        del signum, frame
        logging.warning("SIGTERM received: saving at the next step boundary, then stopping")
        self._sigterm_received = True

    def should_stop(self, step: int) -> bool:
        """Whether a preemption was requested; the loop should `save(step, ...)`, then stop."""
        return self._sigterm_received or self._manager.reached_preemption(step)

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        """Waits for pending saves, releases the manager and restores the SIGTERM handler."""
        self._manager.wait_until_finished()
        self._manager.close()
        if self._previous_sigterm_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm_handler)
            self._previous_sigterm_handler = None

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()
