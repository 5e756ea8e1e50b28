"""Loads a dataset by format name: the one entry point configs and scripts use.

Each format is a loader registered in DATASET_FORMATS with the signature of `DatasetLoader`.
Loaders that read files check the directory themselves and raise DataFormatError naming it (a
generated dataset such as "synthetic" ignores the directory).
"""

from __future__ import annotations

import inspect
import os
from typing import Protocol

from sgrec_jax.core.registry import Registry
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.formats.letter import load_letter
from sgrec_jax.data.formats.p5 import load_p5
from sgrec_jax.data.synthetic import load_synthetic


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
DATASET_FORMATS.register("p5")(load_p5)
DATASET_FORMATS.register("letter")(load_letter)
DATASET_FORMATS.register("synthetic")(load_synthetic)


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
    `num_items` or `conflict`); a loader that takes none rejects them by name. Raises
    UnknownNameError for an unknown format and DataFormatError for missing or malformed files.
    """
    loader = DATASET_FORMATS.get(format)
    if options:
        accepted = inspect.signature(loader).parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in accepted.values())
        unknown = sorted(k for k in options if k not in accepted and not takes_any)
        if unknown:
            raise ValueError(f"dataset format {format!r} takes no options {unknown}")
    return loader(directory, name=name, bid_seed=bid_seed, min_seq_len=min_seq_len, **options)
