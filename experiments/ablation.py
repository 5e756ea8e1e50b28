r"""Ablation of RL advantage schemes from one SFT checkpoint: table, trade-off plot, bootstrap.

    python -m experiments.ablation --config=experiments/configs/NAME.py --workdir=DIR \
        --schemes=sft,single,weighted_sum,adv_sum,a2po,popo_light,popo \
        --sweep=0,0.25,0.5,0.75,1 --seeds=0,1,2 [--config.rl.num_steps=...]

Every (scheme, seed) is a cell: the "rl" stage alone, in DIR/cells/<scheme>/seed_<s>, started
from the same SFT workdir, with config.rl.estimator = scheme and config.seed = s. "sft" is the
start policy itself (config.rl.num_steps = 0). --sweep adds fixed-weight cells
DIR/cells/weighted_sum_w<w>/seed_<s>: the weighted_sum estimator with weights (w, 1 - w) on the
(business, semantic) reward channels. When config.stages holds "sids"/"sft", they run once in
DIR/sft_base and every cell starts from it; otherwise from config.rl.init_workdir.
The reward models (pCTR of "ecpm" and "ecpm_eval", ...) are trained once, in that SFT
workdir's rewards/ (or config.rl.rewards_workdir), seeded by config.rl.reward_seed: every
cell is graded by the same ones.

Resumable: a cell (or sft_base) whose results.json exists is skipped after checking it ran with
the same config (up to run-control fields, see sgrec_jax/stages/runs.py; sft_base ignores the rl
section), so rerunning the command finishes a long sweep over several sessions. A cell stopped
midway resumes from its checkpoints. --summarize_only (no --config needed) tabulates the cells
that have finished so far.

Outputs in DIR:
- ablation.md / ablation.csv: mean ± std over seeds (ddof 1) of recall/ndcg@5,10, eCPM@10,
  semantic@10, valid rate, sign agreement (+ true_business@10, true_relevance@10 on the synthetic
  world); ablation.json holds these plus the trade-off and ground-truth summaries below.
- tradeoff.png / .svg: semantic@10 against eCPM@10 (means, std bars), the sweep joined and its
  Pareto front shaded, one marker per scheme.
- Hypervolume (both objectives maximised): reference point = componentwise minimum over all rows
  of the table (benchmarks protocol), so values compare within one table only. Per row: the
  area its point dominates (hv; hv_norm divided by the table's bounding box), and hv_gain =
  HV(sweep + point) - HV(sweep), > 0 when the point pushes past the fixed-weight front.
- Ground-truth utility (synthetic world): true_business@10 and true_relevance@10 are min-max
  normalised over the table's rows to [0, 1]; utility = their mean, true_hv = their product
  (the hypervolume of the point against the table's minimum, in normalised units).
- bootstrap.md / .json: paired bootstrap over test users of each row - sft on recall@10 and
  ndcg@10, per seed and on per-user means over seeds, from each cell's rl/test_rankings.npz.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from absl import app, flags, logging
from ml_collections import config_flags

from sgrec_jax.stages.ablation import load_finished, plan_cells, run_cells, summarize
from sgrec_jax.stages.cli import quiet_library_logs, run_or_exit
from sgrec_jax.stages.runs import parse_seeds, parse_sweep

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
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of every cell.")
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
        workdir = os.path.abspath(_WORKDIR.value)
        seeds = parse_seeds(_SEEDS.value)
        cells = plan_cells([s for s in _SCHEMES.value if s], parse_sweep(_SWEEP.value))
        if _SUMMARIZE_ONLY.value:
            results = load_finished(workdir, cells, seeds)
            if not results:
                raise ValueError(f"{workdir}: no cell has finished yet")
        else:
            if _CONFIG.value is None:
                raise ValueError("--config is required (unless --summarize_only)")
            results = run_cells(_CONFIG.value, workdir, cells, seeds,
                                channels=_SWEEP_CHANNELS.value)
        logging.info("summarising %d cells", len(results))
        sweep_rows = [c.name for c in cells if c.weight is not None and c.name in results]
        return summarize(workdir, results, sweep_rows, num_resamples=_NUM_RESAMPLES.value,
                         bootstrap_seed=_BOOTSTRAP_SEED.value)

    print(run_or_exit(run))


if __name__ == "__main__":
    app.run(main)
