"""The training pipeline over ArrayRecord shards: `data/pipeline.py`'s guarantees, bounded memory.

Same structure as the in-memory `train_iterator`: a Grain `MapDataset` over global step numbers
(`range(batches_per_epoch).repeat(num_epochs).map_with_index(...)`), so a position is just the
step number, no batch mixes two epochs, every process builds the same global batches and keeps
the contiguous block `shard_index` of each (`np.array_split`), and only that block is read from
disk. Batches have the same keys, shapes and dtypes as the in-memory ones.

Shuffle: Grain's global shuffle. Position p of epoch e holds row
`index_shuffle(p, max_index=n - 1, seed=(seed + e) mod 2^32, rounds=4)`, exactly the order of
`grain.MapDataset.range(n).shuffle(seed=seed).repeat()` (Grain reseeds each epoch by adding the
epoch to the seed), computed per index by a 4-round Feistel permutation: a true permutation of
the whole split every epoch in O(1) memory, where the in-memory path's numpy permutation costs
8 bytes per example. The two paths therefore visit the same examples every epoch (each exactly
once without drop_remainder) in different orders; a run from shards equals the in-memory run
fed that order (tests/data/test_shard_pipeline.py). The index is computed directly rather than
through a `MapDataset.shuffle` because Grain spends ~40 us per element in its dataset layers.

Checkpointing: the iterator is the pipeline's `TrainIterator` (state = step number plus the
settings), so `Checkpointer` saves and restores it through Grain's Orbax handler exactly as the
in-memory one; the settings hold the shards' fingerprint, so a state never restores into an
iterator over other data.

Not supported (yet): length buckets, which need each example's history length at shuffle time.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np
from grain.experimental import index_shuffle

from sgrec_jax.data.pipeline import Batch, TrainIterator, process_shard
from sgrec_jax.data.shards import ShardedExamples

# Reads are I/O: more threads than the in-memory gather, each blocked on Riegeli most of the time.
_READ_OPTIONS = grain.ReadOptions(num_threads=4, prefetch_buffer_size=8)
_ROUNDS = 4  # as grain.MapDataset.shuffle


def epoch_rows(num_examples: int, seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """int64 rows at `positions` of epoch `epoch`'s order (Grain's global shuffle, see above)."""
    epoch_seed = (seed + epoch) % 2**32
    last = num_examples - 1
    return np.fromiter(
        (index_shuffle(int(p), max_index=last, seed=epoch_seed, rounds=_ROUNDS)
         for p in positions), np.int64, len(positions),
    )


@dataclasses.dataclass(frozen=True)
class _ShardBatch:
    """Grain map: global step -> this process's block of that step's global batch, read."""

    shards: ShardedExamples
    batch_size: int
    seed: int
    batches_per_epoch: int
    shard_index: int
    shard_count: int

    def __call__(self, step: int, _: int) -> Batch:
        epoch, batch_in_epoch = divmod(step, self.batches_per_epoch)
        n = len(self.shards)
        start = batch_in_epoch * self.batch_size
        positions = np.arange(start, min(start + self.batch_size, n))
        block = np.array_split(positions, self.shard_count)[self.shard_index]
        return self.shards.read(epoch_rows(n, self.seed, epoch, block))


def shard_train_iterator(
    shards: ShardedExamples,
    *,
    batch_size: int,
    seed: int,
    num_epochs: int | None = None,
    shard_index: int | None = None,
    shard_count: int | None = None,
    drop_remainder: bool = True,
    length_buckets: tuple[int, ...] | list[int] = (),
) -> TrainIterator:
    """Shuffled training batches of this process's share of each global batch, from shards.

    Arguments and batches as `data.pipeline.train_iterator` (batch_size is global; each process
    gets batch_size // shard_count rows), except that length_buckets must be empty.
    """
    if tuple(length_buckets):
        raise ValueError(f"length_buckets {list(length_buckets)} are not supported with "
                         "data.source 'array_record'; set them to ()")
    shard_index, shard_count = process_shard(shard_index, shard_count)
    n = len(shards)
    if batch_size < 1 or batch_size % shard_count:
        raise ValueError(
            f"batch_size {batch_size} must be a positive multiple of shard_count {shard_count}"
        )
    if n == 0 or (drop_remainder and n < batch_size):
        raise ValueError(f"{n} examples in {shards.directory} give no full batch of {batch_size}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    batches_per_epoch = n // batch_size if drop_remainder else math.ceil(n / batch_size)
    make_batch = _ShardBatch(shards, batch_size, seed, batches_per_epoch, shard_index,
                             shard_count)
    steps = grain.MapDataset.range(batches_per_epoch).repeat(num_epochs)
    dataset = steps.map_with_index(make_batch)
    settings = {
        "source": "array_record",
        "examples": shards.fingerprint,
        "num_examples": n,
        "batch_size": batch_size,
        "seed": seed,
        "num_epochs": num_epochs,
        "shard_index": shard_index,
        "shard_count": shard_count,
        "drop_remainder": drop_remainder,
    }
    return TrainIterator(iter(dataset.to_iter_dataset(_READ_OPTIONS)), settings)
