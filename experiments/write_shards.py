r"""Writes a config's dataset as ArrayRecord shards, for training with data.source=array_record.

    python -m experiments.write_shards --config=experiments/configs/quickstart.py \
        --out=workdirs/qs_shards [--sids_workdir=workdirs/qs] [--config.data.options.num_users=...]
    python -m experiments.train --config=experiments/configs/quickstart.py --workdir=workdirs/qs \
        --config.data.source=array_record --config.data.shards_dir=workdirs/qs_shards

The shards hold the leave-one-out examples of the dataset config.data describes (format, dir,
options, max_history) and everything else the stages read (the item table with text, the
dataset's statistics and source-file hashes, the training transitions), so training from them
never loads the dataset; the training command must use the same data settings, which the
pipeline checks against those recorded in the manifest, and the same max_history. --sids_workdir
adds that work directory's SID codes (sids.npz) as the side table "sids". Run it once, on one
host; every host of a training run then reads its share of each batch from the same directory.
Layout and format: sgrec_jax/data/shards.py; what a run reads: sgrec_jax/data/shard_dataset.py.
"""

from __future__ import annotations

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.data.load import dataset_settings
from sgrec_jax.data.shards import write_shards
from sgrec_jax.sid.build import load_semantic_ids
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import load_configured_dataset

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_OUT = flags.DEFINE_string("out", None, "Shard directory to create (must hold no shards yet).")
_EXAMPLES_PER_SHARD = flags.DEFINE_integer("examples_per_shard", 1_000_000,
                                           "Records per ArrayRecord file.")
_EXAMPLES_PER_RECORD = flags.DEFINE_integer("examples_per_record", 16,
                                            "Examples packed in one ArrayRecord record.")
_USERS_PER_BLOCK = flags.DEFINE_integer("users_per_block", 10_000,
                                        "Users split into examples at a time (writer memory).")
_SIDS_WORKDIR = flags.DEFINE_string("sids_workdir", "",
                                    "A work directory whose sids.npz becomes the 'sids' table.")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    config = _CONFIG.value

    def run():
        dataset = load_configured_dataset(config)
        side_tables = {}
        if _SIDS_WORKDIR.value:
            sids = load_semantic_ids(_SIDS_WORKDIR.value, dataset.num_items)
            if sids is None:
                raise ValueError(f"--sids_workdir {_SIDS_WORKDIR.value} holds no sids.npz of "
                                 f"{dataset.num_items} items")
            side_tables["sids"] = {"codes_nl": sids.codes_nl, "level_sizes": sids.level_sizes}
        return write_shards(dataset, _OUT.value, max_history=config.data.max_history,
                            examples_per_shard=_EXAMPLES_PER_SHARD.value,
                            examples_per_record=_EXAMPLES_PER_RECORD.value,
                            users_per_block=_USERS_PER_BLOCK.value, side_tables=side_tables,
                            settings=dataset_settings(config.data))

    manifest = run_or_exit(run)
    for split, info in manifest["splits"].items():
        size = sum(f["bytes"] for f in info["files"])
        print(f"{split:>6s}: {info['num_examples']} examples in {len(info['files'])} files, "
              f"{size / 2**20:.1f} MiB")
    print(f"written in {manifest['write_seconds']:.1f} s to {_OUT.value}")


if __name__ == "__main__":
    run_app(main)
