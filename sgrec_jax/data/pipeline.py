"""Deterministic, checkpointable, multi-host Grain input pipeline over `Examples`.

Training (`train_iterator`): a Grain `MapDataset` over global step numbers
(`range(batches_per_epoch).repeat(num_epochs).map_with_index(...)`). Step k of epoch e takes
the k-th block of B indices of a numpy permutation seeded by (seed, e), then gathers its rows
with one fancy-index per array. So the order is deterministic, different every epoch, no batch
mixes two epochs, and a position is just the step number. Grain's own `.shuffle` was not used:
it permutes one index per Python call (about 12 us each here, 81k examples/s on Beauty), while
a vectorised permutation runs at over a million examples/s.

Multi-host: every process builds the same global index batches and keeps the contiguous block
`shard_index` of each (`np.array_split` into `shard_count` blocks). So all processes take the
same number of steps and together read exactly the global batch.

Checkpointing: the iterator is a `grain.DatasetIterator` whose `get_state()` is a small JSON
dict, so grain 0.2.18's Orbax integration works as is: `grain.checkpoint.CheckpointSave(item=it)`
and `grain.checkpoint.CheckpointRestore(item=it)` (registered with
`grain.checkpoint.CheckpointHandler`, which writes one `process_<i>-of-<n>.json` per process).
`iterator_state` / `restore_iterator_state` give the same state as bytes for any other store.
The state also records the pipeline's settings, so restoring into an iterator built with another
seed, batch size or dataset fails instead of silently reading other data.

Evaluation (`eval_batches`): in order, every example once, the last batch padded to full size
and marked by a `valid` mask, so jitted evaluation compiles for one shape.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from typing import Any

import grain
import jax
import numpy as np

from sgrec_jax.data.split import PAD_ITEM, Examples

Batch = dict[str, np.ndarray]

# Grain threads prepare a few batches ahead so gathering overlaps the device step. A batch is
# one in-memory fancy-index, so two threads suffice; more only contend for the GIL.
_READ_OPTIONS = grain.ReadOptions(num_threads=2, prefetch_buffer_size=8)


def gather(examples: Examples, rows: np.ndarray) -> Batch:
    """The batch of `examples` at `rows` [b]: history [b, H], history_mask [b, H], target, user."""
    history_bh = examples.history[rows]
    return {
        "history": history_bh,
        "history_mask": history_bh != PAD_ITEM,
        "target": examples.target[rows],
        "user": examples.user[rows],
    }


@functools.lru_cache(maxsize=4)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The example order of one epoch: a permutation seeded by (seed, epoch), read-only.

    Cached because every batch of an epoch slices the same permutation; four entries cover the
    epoch boundary while prefetch threads work on both sides of it.
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.flags.writeable = False
    return order


@dataclasses.dataclass(frozen=True)
class _TrainBatch:
    """Grain map: global step -> this process's block of that step's global batch."""

    examples: Examples
    batch_size: int
    seed: int
    batches_per_epoch: int
    shard_index: int
    shard_count: int

    def __call__(self, step: int, _: int) -> Batch:
        epoch, batch_in_epoch = divmod(step, self.batches_per_epoch)
        start = batch_in_epoch * self.batch_size
        order = _epoch_order(len(self.examples), self.seed, epoch)
        global_rows = order[start : start + self.batch_size]
        rows = np.array_split(global_rows, self.shard_count)[self.shard_index]
        return gather(self.examples, rows)


class TrainIterator(grain.DatasetIterator):
    """A Grain iterator whose state also holds the settings it was built with.

    `settings` must be JSON-native (ints, bools, None, strings) so that a state survives a JSON
    round trip and still compares equal.
    """

    def __init__(self, parent: grain.DatasetIterator, settings: dict[str, Any]):
        super().__init__(parent)
        self.settings = settings

    def __next__(self) -> Batch:
        return next(self._parent)

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": dict(self.settings), "grain": self._parent.get_state()}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("pipeline") != self.settings:
            raise ValueError(
                f"iterator state was saved by pipeline {state.get('pipeline')}, "
                f"cannot restore it into pipeline {self.settings}"
            )
        self._parent.set_state(state["grain"])


def _shard_defaults(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if (shard_index is None) != (shard_count is None):
        raise ValueError("give both shard_index and shard_count, or neither")
    if shard_index is None or shard_count is None:
        return jax.process_index(), jax.process_count()
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
    return shard_index, shard_count


def train_iterator(
    examples: Examples,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
) -> TrainIterator:
    """Shuffled training batches of this process's share of each global batch.

    Args:
      examples: the training examples.
      batch_size: the global batch size B, over all processes; each process gets
        b = B // shard_count rows per batch.
      seed: shuffle seed (>= 0); each epoch has a different, deterministic order.
      num_epochs: epochs to run, or None to repeat forever.
      shard_index, shard_count: this process's slot; default jax.process_index() and
        jax.process_count().
      drop_remainder: drop each epoch's last partial global batch (len(examples) % B examples,
        different ones every epoch), so every batch has the same shape. With False the last batch
        of an epoch is smaller and its per-process blocks may differ by one row (or be empty).

    Yields:
      dicts of numpy arrays: history int32 [b, H], history_mask bool [b, H], target int32 [b],
      user int32 [b].
    """
    shard_index, shard_count = _shard_defaults(shard_index, shard_count)
    n = len(examples)
    if batch_size < 1 or batch_size % shard_count:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of shard_count {shard_count}"
        )
    if n == 0 or (drop_remainder and n < batch_size):
        raise ValueError(f"{n} examples give no full batch of {batch_size}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    batches_per_epoch = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    make_batch = _TrainBatch(
        examples, batch_size, seed, batches_per_epoch, shard_index, shard_count
    )
    steps = grain.MapDataset.range(batches_per_epoch).repeat(num_epochs)
    dataset = steps.map_with_index(make_batch)
    settings = {
        "num_examples": n,
        "batch_size": batch_size,
        "seed": seed,
        "num_epochs": num_epochs,
        "shard_index": shard_index,
        "shard_count": shard_count,
        "drop_remainder": drop_remainder,
    }
    return TrainIterator(iter(dataset.to_iter_dataset(_READ_OPTIONS)), settings)


def iterator_state(iterator: grain.DatasetIterator) -> bytes:
    """The iterator's position as UTF-8 JSON, for checkpoint stores other than Orbax."""
    return json.dumps(iterator.get_state(), sort_keys=True).encode()


def restore_iterator_state(iterator: grain.DatasetIterator, state: bytes) -> None:
    """Moves a freshly built, identically configured iterator to a saved position."""
    iterator.set_state(json.loads(state.decode()))


@dataclasses.dataclass(frozen=True)
class _EvalBatch:
    """Grain map: batch number -> that slice of the examples, padded to `batch_size` rows."""

    examples: Examples
    batch_size: int

    def __call__(self, batch_index: int) -> Batch:
        start = batch_index * self.batch_size
        rows = np.arange(start, min(start + self.batch_size, len(self.examples)))
        # Padding repeats a real row so models never see an all-padded history (NaN attention);
        # `valid` keeps it out of the metrics.
        padded = np.concatenate([rows, np.full(self.batch_size - len(rows), rows[0])])
        batch = gather(self.examples, padded)
        batch["valid"] = np.arange(self.batch_size) < len(rows)
        return batch


def eval_batches(examples: Examples, *, batch_size: int) -> grain.MapDataset:
    """Every example once, in order, in batches of exactly `batch_size` rows.

    Each batch is a training batch plus `valid` bool [batch_size]; only the last batch has
    invalid (padding) rows. The result supports len(), indexing and iteration.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_batches = math.ceil(len(examples) / batch_size)
    return grain.MapDataset.range(num_batches).map(_EvalBatch(examples, batch_size))
