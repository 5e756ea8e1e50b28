r"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--export=RESULTS.json] [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --merge=DIR_1,DIR_2 --workdir=OUT [--export=RESULTS.json]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft[,sasrec]]
    python -m experiments.multi_seed --config=... --workdir=DIR --seeds=1 --archive=ARCHIVE

--archive copies the finished seeds (results, config, top-10 test rankings; sgrec_jax/stages/
seed_archive.py) into ARCHIVE, itself a multi-seed directory small enough to commit: seeds run in
different sessions are archived into one ARCHIVE (docs/results/runs/<experiment>) and merged:

    python -m experiments.multi_seed --workdir=workdirs/beauty_table \
        --merge=docs/results/runs/beauty_sft,docs/results/runs/beauty_sasrec \
        --export=docs/results/beauty.json

E.g. the committed Beauty table (docs/results/beauty.json) from the SFT config's directory (the
generator and the counting floors) and the SASRec config's:

    python -m experiments.multi_seed --workdir=workdirs/beauty_table \
        --merge=workdirs/beauty_sft_seeds,workdirs/beauty_sasrec_seeds \
        --export=docs/results/beauty.json

What each run writes and how it resumes: see sgrec_jax/stages/multi_seed.py, which holds the logic.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from experiments.configs.common import base_config
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.multi_seed import SYSTEMS, compare_dirs, merge_dirs, run_seeds, summarize
from sgrec_jax.stages.runs import parse_seeds
from sgrec_jax.stages.seed_archive import archive_seeds

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Multi-seed directory (one seed_<s> folder per seed); with --compare or "
    "--merge, where their tables go."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run and tabulate.")
_COMPARE = flags.DEFINE_list("compare", None, "DIR_A,DIR_B: compare two multi-seed directories.")
_MERGE = flags.DEFINE_list(
    "merge", None, "DIR_1,DIR_2,...: one table of the systems of several multi-seed directories "
    "(each system from the first directory that ran it)."
)
_EXPORT = flags.DEFINE_string(
    "export", None, "With --config or --merge: also write the table as a results file in "
    "benchmarks.md's format (e.g. docs/results/beauty.json)."
)
_SYSTEM = flags.DEFINE_list(
    "system", ["sft"], f"With --compare: the system ({', '.join(SYSTEMS)}) of both directories, "
    "or of DIR_A and DIR_B in turn (sft,sasrec compares A's generator with B's SASRec)."
)
_ARCHIVE = flags.DEFINE_string(
    "archive", None, "With --config: also copy the finished seeds' results, config and top-10 "
    "test rankings into this directory (committable; --merge reads it like a multi-seed "
    "directory). A seed already there must report the same metrics."
)
_NUM_RESAMPLES = flags.DEFINE_integer("num_resamples", 10_000, "Bootstrap resamples.")
_BOOTSTRAP_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seeds the bootstrap resampling.")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = _WORKDIR.value
    options = {"num_resamples": _NUM_RESAMPLES.value, "bootstrap_seed": _BOOTSTRAP_SEED.value}
    def run() -> str:
        given = {"--config": _CONFIG.value, "--compare": _COMPARE.value, "--merge": _MERGE.value}
        modes = [name for name, value in given.items() if value is not None]
        if len(modes) != 1:
            raise ValueError("pass exactly one of --config, --compare=DIR_A,DIR_B and "
                             f"--merge=DIR_1,...; got {', '.join(modes) or 'none'}")
        if _COMPARE.value is not None:
            if _EXPORT.value:
                raise ValueError("--export needs --config or --merge (the results file holds "
                                 "rows sft, sasrec, ..., not A and B)")
            if len(_COMPARE.value) != 2:
                raise ValueError("--compare takes exactly DIR_A,DIR_B")
            dir_a, dir_b = _COMPARE.value
            return compare_dirs(dir_a, dir_b, workdir, system=_SYSTEM.value, **options)
        if _ARCHIVE.value and _CONFIG.value is None:
            raise ValueError("--archive needs --config (it archives the seeds that config ran)")
        if _MERGE.value is not None:
            return merge_dirs(_MERGE.value, workdir, export=_EXPORT.value, **options)
        seeds = parse_seeds(_SEEDS.value)
        # A finished seed adopts a field added after it ran when it holds the code's default.
        results = run_seeds(_CONFIG.value, workdir, seeds, defaults=base_config())
        text = summarize(workdir, results, export=_EXPORT.value, **options)
        if _ARCHIVE.value:
            added = archive_seeds(workdir, _ARCHIVE.value, seeds, defaults=base_config())
            text += (f"\narchived seeds {', '.join(map(str, added)) or 'none (all there)'} "
                     f"into {_ARCHIVE.value}\n")
        return text

    text = run_or_exit(run)
    print(text)


if __name__ == "__main__":
    run_app(main)
