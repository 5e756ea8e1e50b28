r"""Ablation of RL advantage schemes from one SFT checkpoint: table, trade-off plot, bootstrap.

    python -m experiments.ablation --config=experiments/configs/NAME.py --workdir=DIR \
        --schemes=sft,single,weighted_sum,adv_sum,a2po,popo_light,popo \
        --sweep=0,0.25,0.5,0.75,1 --seeds=0,1,2 [--config.rl.num_steps=...] \
        [--variant='sft_continued:rl.pg_weight=0;rl.nll_weight=1;rl.beta=0' \
         --variant="anchored:rl.estimator=single;rl.channels=('rank',);rl.nll_weight=0.5"] \
        [--reference=sft_continued] [--export=docs/results/NAME_rl.json] \
        [--export_names=anchored=single:rank] [--sft_per_seed] [--archive=docs/results/runs/NAME]

A variant is NAME:field=value;field=value (rl.* and eval.* fields; one --variant per row, as
values such as tuples hold commas).

What each run writes and how it resumes: see sgrec_jax/stages/ablation.py, which holds the logic.
"""

from __future__ import annotations

from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from experiments.configs.common import base_config
from sgrec_jax.core.files import as_path
from sgrec_jax.stages.ablation import (
    backfill_rewards,
    check_reference,
    load_finished,
    parse_export_names,
    plan_cells,
    run_cells,
    summarize,
)
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.runs import parse_seeds, parse_sweep
from sgrec_jax.stages.variants import parse_variants

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Ablation directory (sft_base/, cells/, tables).")
_SCHEMES = flags.DEFINE_list(
    "schemes", ["sft", "single", "weighted_sum", "adv_sum", "a2po", "popo_light", "popo"],
    "Rows: 'sft' (the start policy) and estimator names.",
)
_SWEEP = flags.DEFINE_list(
    "sweep", ["0", "0.25", "0.5", "0.75", "1"],
    "Business weights w of the fixed-weight weighted_sum sweep (semantic weight 1 - w); "
    "empty for none.",
)
_SWEEP_CHANNELS = flags.DEFINE_list(
    "sweep_channels", [], "BUSINESS,SEMANTIC reward channels the sweep weighs (default: the "
    "first two of config.rl.channels).",
)
_VARIANTS = flags.DEFINE_multi_string(
    "variant", [], "NAME:field=value;field=value (rl.* and eval.* config fields, Python literals "
    "or raw strings): a row running the config with these overrides; repeat for each row.",
)
_REFERENCE = flags.DEFINE_string(
    "reference", None, "A row (e.g. sft_continued) every other row is also bootstrapped against, "
    "beside sft.",
)
_EXPORT = flags.DEFINE_string(
    "export", None, "Also write the table as a results file in benchmarks.md's format.",
)
_EXPORT_NAMES = flags.DEFINE_list(
    "export_names", [], "CELL=ROW,...: the results file's names for rows (benchmarks.md: "
    "single:rank, a2po:rank+psj, sft_continued); other rows keep their cell's name.",
)
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
_SFT_PER_SEED = flags.DEFINE_bool(
    "sft_per_seed", False, "Train the config's sids/sft stages once per seed (DIR/sft_bases/"
    "seed_<s>, config.seed = s) and start each seed's cells from its own base, so the bootstrap "
    "holds SFT's seed variance too; reward models are still trained once (DIR/rewards).",
)
_ARCHIVE = flags.DEFINE_string(
    "archive", None, "With --config: restore the cells archived in ARCHIVE that the workdir "
    "lacks, then archive each cell as it finishes (results, config, top-10 test rankings, "
    "per-user rewards; sgrec_jax/stages/cell_archive.py), so cells run in several sessions or "
    "on a lent device form one table. ARCHIVE is itself an ablation directory "
    "(--summarize_only --workdir=ARCHIVE tabulates it), small enough to commit.",
)
_SUMMARIZE_ONLY = flags.DEFINE_bool(
    "summarize_only", False, "Run nothing; tabulate the cells that have finished."
)
_NUM_RESAMPLES = flags.DEFINE_integer("num_resamples", 10_000, "Bootstrap resamples.")
_BOOTSTRAP_SEED = flags.DEFINE_integer("bootstrap_seed", 0, "Seeds the bootstrap resampling.")
flags.mark_flag_as_required("workdir")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()

    def run() -> str:
        workdir = as_path(_WORKDIR.value)
        seeds = parse_seeds(_SEEDS.value)
        variants = parse_variants(_VARIANTS.value) if _VARIANTS.value else []
        cells = plan_cells([s for s in _SCHEMES.value if s], parse_sweep(_SWEEP.value), variants)
        reference = check_reference(cells, _REFERENCE.value)
        export_names = parse_export_names(_EXPORT_NAMES.value, cells)
        if _SUMMARIZE_ONLY.value:
            if _ARCHIVE.value:
                raise ValueError("--archive with --summarize_only: tabulate the archive itself "
                                 "with --workdir=ARCHIVE")
            results = load_finished(workdir, cells, seeds)
            if not results:
                raise ValueError(f"{workdir}: no cell has finished yet")
        else:
            if _CONFIG.value is None:
                raise ValueError("--config is required (unless --summarize_only)")
            if _ARCHIVE.value and as_path(_ARCHIVE.value) == workdir:
                raise ValueError("--archive must be another directory than --workdir")
            # A finished cell adopts a field added after it ran when it holds the code's default.
            results = run_cells(_CONFIG.value, workdir, cells, seeds,
                                channels=_SWEEP_CHANNELS.value, defaults=base_config(),
                                sft_per_seed=_SFT_PER_SEED.value, archive=_ARCHIVE.value)
        backfill_rewards(workdir, results)
        logging.info("summarising %d cells", len(results))
        sweep_rows = [c.name for c in cells if c.weight is not None and c.name in results]
        return summarize(workdir, results, sweep_rows, reference=reference, variants=variants,
                         export=_EXPORT.value, num_resamples=_NUM_RESAMPLES.value,
                         bootstrap_seed=_BOOTSTRAP_SEED.value, export_names=export_names)

    print(run_or_exit(run))


if __name__ == "__main__":
    run_app(main)
