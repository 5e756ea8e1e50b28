"""Loads a dataset by format name: the one entry point configs and scripts use.

Each format is a loader registered in DATASET_FORMATS (by sgrec_jax/registration.py) with the
signature of `DatasetLoader` and the defaults of the options it takes (config.data.options).
Loaders that read files check the directory themselves and raise DataFormatError naming it (a
generated dataset such as "synthetic" ignores the directory).
"""

from __future__ import annotations

import json
import os
from typing import Any, Protocol

from sgrec_jax.core.registry import Registry
from sgrec_jax.data.dataset import SeqRecDataset


class DatasetLoader(Protocol):
    def __call__(
        self,
        directory: str | os.PathLike,
        name: str | None = None,
        bid_seed: int = 0,
        min_seq_len: int = 3,
        **options,
    ) -> SeqRecDataset: ...


DATASET_FORMATS: Registry[DatasetLoader] = Registry("dataset format")


def load_dataset(
    format: str,
    directory: str | os.PathLike,
    *,
    name: str | None = None,
    bid_seed: int = 0,
    min_seq_len: int = 3,
    **options,
) -> SeqRecDataset:
    """Loads `directory` with the loader registered as `format` (e.g. "p5", "letter").

    bid_seed seeds the simulated bids; min_seq_len is the shortest sequence accepted (3 is the
    minimum for leave-one-out). `options` go to the loader (e.g. the synthetic world's
    `num_items` or `conflict`), checked against the format's registered options; only those
    given are passed, the loader applies its own defaults. Raises UnknownNameError for an
    unknown format, UnknownOptionError for an option it does not take and DataFormatError for
    missing or malformed files.
    """
    DATASET_FORMATS.resolve(format, options)
    loader = DATASET_FORMATS.get(format)
    return loader(directory, name=name, bid_seed=bid_seed, min_seq_len=min_seq_len, **options)


def dataset_settings(data: Any) -> dict[str, Any]:
    """What identifies the dataset a config's data section loads, as JSON values: the format,
    name, bid_seed, min_seq_len and the loader's options with their defaults filled in (so a
    config that spells out a default matches one that leaves it out).

    `data.dir` is left out: a directory's path differs between the host that wrote shards and
    those that read them; the files' hashes identify it instead (`SeqRecDataset.source_files`).
    """
    settings = {"format": data.format, "name": data.name or "", "bid_seed": int(data.bid_seed),
                "min_seq_len": int(data.min_seq_len),
                "options": DATASET_FORMATS.resolve(data.format, dict(data.options))}
    return json.loads(json.dumps(settings, sort_keys=True))
