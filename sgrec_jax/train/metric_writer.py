"""Scalar metrics to TensorBoard and metrics.jsonl, and a compact progress line on the console.

    with MetricWriter(workdir, purge_step=start_step + 1) as writer:
        progress = ProgressLogger(total_steps, every=100, keys=("loss", "grad_norm"))
        ...
        writer.write_scalars(step, metrics)      # event file + one JSON line
        progress.log(step, metrics)              # every 100 steps

The event files are written by tensorboardX (pure Python and protobuf), so TensorFlow is never
imported. `metrics.jsonl` holds one flushed JSON object per write, {"step": s, name: value, ...},
so results can be read without TensorBoard. Only process 0 writes, so a multi-host run produces
one set of files. Reading a metric fetches it from the device (a sync): write every few steps,
not every step, when steps are fast.

Both files grow by appending, which object stores cannot do: for a logdir such as gs://bucket/run
they are written in a local staging directory and uploaded whole every UPLOAD_SECONDS, on
`flush` and on `close` (a preempted run closes the writer; a killed one loses the points written
since the last upload).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

from sgrec_jax.core.files import as_path, atomic_write, is_local

METRICS_FILE = "metrics.jsonl"
UPLOAD_SECONDS = 60.0


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host floats of `metrics`, each a scalar (python number, numpy or jax array of size 1)."""
    values = jax.device_get(dict(metrics))  # one transfer for all; returns keys sorted
    out = {}
    for name in metrics:
        array = np.asarray(values[name])
        if array.size != 1:
            raise ValueError(f"metric {name!r} is not a scalar: shape {array.shape}")
        out[name] = float(array.reshape(()))
    return out


class MetricWriter:
    """Writes scalars to TensorBoard event files and to metrics.jsonl in `logdir`."""

    def __init__(self, logdir: str | os.PathLike, *, purge_step: int | None = None):
        """
        Args:
          logdir: the run's directory (created if missing).
          purge_step: when resuming from a checkpoint at step s, pass s + 1: the points of the
            interrupted run at steps >= s + 1 are dropped from metrics.jsonl and hidden by
            TensorBoard, so the resumed run does not show them twice.
        """
        self.logdir = as_path(logdir)
        self.path = self.logdir / METRICS_FILE
        self._active = jax.process_index() == 0
        if not self._active:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        if purge_step is not None and self.path.exists():
            self._purge_jsonl(purge_step)
        self._staging = None if is_local(self.logdir) else tempfile.mkdtemp(prefix="metrics_")
        local = pathlib.Path(self._staging or self.logdir)
        if self._staging and self.path.exists():
            (local / METRICS_FILE).write_bytes(self.path.read_bytes())
        self._summary = SummaryWriter(os.fspath(local), purge_step=purge_step, flush_secs=30)
        self._jsonl = open(local / METRICS_FILE, "a", encoding="utf-8")
        self._uploaded = time.monotonic()

    def _purge_jsonl(self, purge_step: int) -> None:
        lines = self.path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] < purge_step]
        atomic_write(self.path, lambda f: f.write("".join(kept).encode()))

    def _upload(self) -> None:
        """Copies the staged files to the remote logdir, each replacing its previous upload."""
        for local in sorted(pathlib.Path(self._staging).iterdir()):
            data = local.read_bytes()
            atomic_write(self.logdir / local.name, lambda f, data=data: f.write(data))
        self._uploaded = time.monotonic()

    def write_scalars(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Records every metric (a scalar) at `step`."""
        if not self._active:
            return
        scalars = _scalars(metrics)
        for name, value in scalars.items():
            # TensorBoard tags allow [A-Za-z0-9_./-]; "recall@10" becomes "recall_at_10" there
            # (tensorboardX would rename it to "recall_10" with a warning on every write).
            self._summary.add_scalar(name.replace("@", "_at_"), value, global_step=step)
        # NaN and inf are written as JSON's NaN/Infinity tokens, which json.loads reads back.
        self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
        self._jsonl.flush()
        if self._staging and time.monotonic() - self._uploaded >= UPLOAD_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._active:
            self._summary.flush()
            self._jsonl.flush()
            if self._staging:
                self._upload()

    def close(self) -> None:
        if self._active and not self._jsonl.closed:
            self._summary.close()
            self._jsonl.close()
            if self._staging:
                self._upload()
                shutil.rmtree(self._staging)

    def __enter__(self) -> MetricWriter:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class ProgressLogger:
    """Logs `step s/total (p%) | r steps/s | ETA t | key metrics` every `every` steps.

    The rate is measured over the steps since the previous line, so compilation time spent in
    the first step only affects the first line.
    """

    def __init__(self, total_steps: int, *, every: int = 100, keys: Sequence[str] = ("loss",)):
        if total_steps < 1 or every < 1:
            raise ValueError(f"need total_steps, every >= 1, got {total_steps}, {every}")
        self.total_steps = total_steps
        self.every = every
        self.keys = tuple(keys)
        self._last: tuple[int, float] | None = None

    def line(self, step: int, metrics: Mapping[str, Any], now: float) -> str | None:
        """The progress line for `step` at time `now` (seconds), or None between lines."""
        if self._last is None:
            self._last = (step, now)
        if step % self.every and step != self.total_steps:
            return None
        last_step, last_time = self._last
        self._last = (step, now)
        rate = (step - last_step) / (now - last_time) if now > last_time else math.nan
        eta = (self.total_steps - step) / rate if rate > 0 else math.inf
        shown = _scalars({k: metrics[k] for k in self.keys if k in metrics})
        values = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
        return (
            f"step {step}/{self.total_steps} ({100 * step / self.total_steps:.0f}%) | "
            f"{rate:.3g} steps/s | ETA {_duration(eta)} | {values}"
        ).rstrip(" |")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Logs the progress line through absl logging when `step` is due for one."""
        text = self.line(step, metrics, time.perf_counter())
        if text is not None:
            logging.info("%s", text)
