r"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft[,sasrec]]

What each run writes and how it resumes: see sgrec_jax/stages/multi_seed.py, which holds the logic.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags
from ml_collections import config_flags

from sgrec_jax.stages.cli import quiet_library_logs, run_or_exit
from sgrec_jax.stages.multi_seed import SYSTEMS, compare_dirs, run_seeds, summarize
from sgrec_jax.stages.runs import parse_seeds

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Multi-seed directory (one seed_<s> folder per seed); with --compare, "
    "where compare.md/.json go."
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds to run and tabulate.")
_COMPARE = flags.DEFINE_list("compare", None, "DIR_A,DIR_B: compare two multi-seed directories.")
_SYSTEM = flags.DEFINE_list(
    "system", ["sft"], f"With --compare: the system ({', '.join(SYSTEMS)}) of both directories, "
    "or of DIR_A and DIR_B in turn (sft,sasrec compares A's generator with B's SASRec)."
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
        if _COMPARE.value is not None:
            if _CONFIG.value is not None or len(_COMPARE.value) != 2:
                raise ValueError("--compare takes exactly DIR_A,DIR_B and no --config")
            dir_a, dir_b = _COMPARE.value
            return compare_dirs(dir_a, dir_b, workdir, system=_SYSTEM.value, **options)
        if _CONFIG.value is None:
            raise ValueError("--config is required (or --compare=DIR_A,DIR_B)")
        results = run_seeds(_CONFIG.value, workdir, parse_seeds(_SEEDS.value))
        return summarize(workdir, results, **options)

    text = run_or_exit(run)
    print(text)


if __name__ == "__main__":
    app.run(main)
