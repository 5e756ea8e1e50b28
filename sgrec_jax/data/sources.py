"""Where training examples come from: `config.data.source`, "memory" or "array_record".

"memory" (the default, right for the public benchmarks): `split.leave_one_out` of the loaded
dataset, batched by `data/pipeline.py`. "array_record" (logs that do not fit in host memory):
the shards in `config.data.shards_dir`, written once by `python -m experiments.write_shards`,
streamed by `data/shard_pipeline.py`; the validation and test splits (one example per user) are
left in the same shards too, and read at the rows a stage evaluates
(`train.evaluate.subsample`: the validation subset, the test split or its eval.test_users
subset). The stages call `load_splits` and the training loops `train_iterator_for`, so a source
is one config value; the pipeline then gives the stages a `ShardDataset` instead of the loaded
dataset (`data/shard_dataset.py`).
"""

from __future__ import annotations

from typing import NamedTuple

from etils import epath

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.pipeline import TrainIterator, train_iterator
from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.shard_pipeline import shard_train_iterator
from sgrec_jax.data.shards import (
    MANIFEST,
    SPLITS,
    ShardedExamples,
    dataset_fingerprint,
    read_manifest,
)
from sgrec_jax.data.split import Examples, leave_one_out

SOURCES = ("memory", "array_record")


class DataSplits(NamedTuple):
    """The leave-one-out splits; each a `ShardedExamples` when read from shards."""

    train: Examples | ShardedExamples
    valid: Examples | ShardedExamples
    test: Examples | ShardedExamples


def check_data_source(source: str, shards_dir: str, length_buckets=()) -> None:
    """Fails before any work on a source the training cannot run with (config.data fields)."""
    if source not in SOURCES:
        raise ValueError(f"data.source must be one of {', '.join(SOURCES)}, got {source!r}")
    if source == "array_record":
        if not shards_dir:
            raise ValueError("data.source 'array_record' needs data.shards_dir (a directory "
                             "written by `python -m experiments.write_shards`)")
        if tuple(length_buckets):
            raise ValueError(f"length_buckets {list(length_buckets)} are not supported with "
                             "data.source 'array_record'; set them to ()")


def load_splits(dataset: SeqRecDataset | ShardDataset, *, max_history: int,
                source: str = "memory", shards_dir: str | epath.PathLike = "") -> DataSplits:
    """The splits of `dataset` from `source`.

    For "array_record" the shards must have been written from this very dataset (same
    fingerprint: a `ShardDataset` carries its manifest's) with this max_history; otherwise
    DataFormatError names the manifest, so a run never trains on other data than its config
    describes.
    """
    check_data_source(source, str(shards_dir))
    if source == "memory":
        splits = leave_one_out(dataset, max_history)
        return DataSplits(splits.train, splits.valid, splits.test)
    manifest = read_manifest(shards_dir)
    path = epath.Path(shards_dir) / MANIFEST
    if manifest["max_history"] != max_history:
        raise DataFormatError(path, f"shards have max_history {manifest['max_history']}, the "
                                    f"config says {max_history}")
    fingerprint = (dataset.fingerprint if isinstance(dataset, ShardDataset)
                   else dataset_fingerprint(dataset))
    if manifest["dataset"]["fingerprint"] != fingerprint:
        raise DataFormatError(path, f"shards were written from another dataset "
                                    f"({manifest['dataset']['name']!r}, "
                                    f"{manifest['dataset']['num_users']} users) than the "
                                    f"configured {dataset.name!r} ({dataset.num_users} users)")
    return DataSplits(*(ShardedExamples(shards_dir, split) for split in SPLITS))


def train_iterator_for(train: Examples | ShardedExamples, **kwargs) -> TrainIterator:
    """`pipeline.train_iterator` or `shard_pipeline.shard_train_iterator`, by the type of
    `train`; same arguments, same batches, same checkpointable state."""
    if isinstance(train, ShardedExamples):
        return shard_train_iterator(train, **kwargs)
    return train_iterator(train, **kwargs)
