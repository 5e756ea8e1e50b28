r"""Runs an experiment over several seeds, tabulates mean ± std, and bootstraps system differences.

    python -m experiments.multi_seed --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        --seeds=0,1,2 [--config.FIELD=VALUE ...]
    python -m experiments.multi_seed --compare=DIR_A,DIR_B --workdir=OUT [--system=sft]

Seed s runs the pipeline in DIR/seed_<s> with config.seed = s, which seeds the model's
initialisation, dropout, batch order, the validation subset and, for learned SIDs, the
quantizer. The data stay fixed (data.bid_seed is not varied; the split is deterministic), so
every seed is scored on the same test users and systems can be paired user by user. A seed
whose results.json exists is skipped, so rerunning the command resumes cell by cell (a seed
stopped midway resumes from its checkpoints); a finished seed must have the same config, up to
run-control fields such as sft.max_steps_per_run.

DIR receives table.md/.csv (mean ± std over seeds per system: "sft", the generator, and
"sasrec" when that stage ran) and, when both systems ran, bootstrap.md/.json: a paired
bootstrap over test users of sft - sasrec on recall@10 and ndcg@10 for each seed, and for the
per-user values averaged over seeds ("seed_mean": user sampling only, the seed noise averaged
out). Per-user values are recomputed from each system's saved test_rankings.npz.

--compare pairs one system (--system) of two multi-seed directories by seed (those both have
finished) and user, and writes OUT/compare.md/.json (table of both plus the bootstrap A - B).
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
_SYSTEM = flags.DEFINE_enum("system", "sft", list(SYSTEMS), "The system --compare compares.")
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
