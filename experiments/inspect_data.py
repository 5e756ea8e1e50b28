"""Prints a dataset's statistics and leave-one-out split sizes, or one error line.

    python -m experiments.inspect_data --format=p5 --dir=/work/shared/data/amazon2014_beauty

Bad input prints `error: <file>:<line>: <what>` to stderr and exits with status 1.
"""

from __future__ import annotations

import sys

from absl import app, flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.load import load_dataset
from sgrec_jax.data.split import leave_one_out

_FORMAT = flags.DEFINE_string("format", "p5", "Dataset format registered in DATASET_FORMATS.")
_DIR = flags.DEFINE_string("dir", None, "Dataset directory.", required=True)
_NAME = flags.DEFINE_string("name", None, "Dataset name (default: the directory's name).")
_MAX_HISTORY = flags.DEFINE_integer("max_history", 20, "History cap of the leave-one-out split.")


def main(argv: list[str]) -> None:
    del argv
    try:
        dataset = load_dataset(_FORMAT.value, _DIR.value, name=_NAME.value)
    except (DataFormatError, UnknownNameError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    splits = leave_one_out(dataset, max_history=_MAX_HISTORY.value)
    print(f"dataset: {dataset.name} ({_FORMAT.value}, {_DIR.value})")
    for key, value in dataset.stats().items():
        print(f"{key}: {value:.4g}" if isinstance(value, float) else f"{key}: {value:,}")
    for part in ("train", "valid", "test"):
        print(f"{part}_examples: {len(getattr(splits, part)):,}")
    titled = sum(1 for t in dataset.items.text.get("title", ()) if t)
    print(f"items_with_title: {titled:,}")
    print(f"distinct_attributes: {len({a for attrs in dataset.items.attributes for a in attrs}):,}")
    print(f"bids: {dataset.items.bid_source}")


if __name__ == "__main__":
    app.run(main)
