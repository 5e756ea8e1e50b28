"""Ablation of RL advantage schemes from one SFT checkpoint: cells, table, trade-off, bootstrap.

    python -m experiments.ablation --config=experiments/configs/NAME.py --workdir=DIR \
        --schemes=sft,single,weighted_sum,adv_sum,a2po,popo_light,popo \
        --sweep=0,0.25,0.5,0.75,1 --seeds=0,1,2 [--config.rl.num_steps=...] \
        [--variant='sft_continued:rl.pg_weight=0;rl.nll_weight=1;rl.beta=0' ...] \
        [--reference=sft_continued] [--export=docs/results/NAME_rl.json]

Every (scheme, seed) is a cell: the "rl" stage alone, in DIR/cells/<scheme>/seed_<s>, started
from the same SFT workdir, with config.rl.estimator = scheme and config.seed = s. "sft" is the
start policy itself (config.rl.num_steps = 0). Each --variant NAME:field=value;...
(sgrec_jax/stages/variants.py; one flag per variant, as values such as tuples hold commas) adds
the cells DIR/cells/<NAME>/seed_<s>: the config with those overrides, e.g. SFT continued by NLL
alone (`rl.pg_weight=0;rl.nll_weight=1;rl.beta=0`, the control row) or an estimator with an NLL
anchor. A variant may change rl.* and eval.* fields only (the cells share the SFT base), not
rl.init_workdir; its overrides are applied and checked with every other cell's config before
anything runs. --sweep adds fixed-weight cells DIR/cells/weighted_sum_w<w>/seed_<s>: the
weighted_sum estimator with weights (w, 1 - w) on the (business, semantic) reward channels.
Rows: the schemes, the variants, the sweep, in that order. When config.stages holds
"sids"/"sft", they run once in DIR/sft_base and every cell starts from it; otherwise from
config.rl.init_workdir.
The reward models (pCTR of "ecpm" and "ecpm_eval", ...) are trained once, in that SFT
workdir's rewards/ (or config.rl.rewards_workdir), seeded by config.rl.reward_seed: every
cell is graded by the same ones.

--sft_per_seed (sft_per_seed=True) runs the base stages once per seed instead, in
DIR/sft_bases/seed_<s> with config.seed = s, and the cells of seed s start from that base (the
"sft" row of seed s is it). The paired bootstrap on per-user means over seeds then holds the
SFT model's seed-to-seed variance as well as RL's; with one shared base it holds RL's alone.
The reward models are still trained once, in DIR/rewards (unless config.rl.rewards_workdir names
another place): they depend on the data and rl.reward_seed only, so every cell of every seed
is graded by the same ones.

Resumable: a cell (or sft_base) whose results.json exists is skipped after checking it ran with
the same config (up to run-control fields, see sgrec_jax/stages/runs.py; sft_base ignores the rl
section), so rerunning the command finishes a long sweep over several sessions. A cell stopped
midway resumes from its checkpoints. --summarize_only (no --config needed) tabulates the cells
that have finished so far. --archive=ARCHIVE (sgrec_jax/stages/cell_archive.py) keeps a
committable copy of every finished cell (results, config, top-10 test rankings, per-user rewards)
and restores it into a work directory that lacks it, so a table's cells can run over sessions
whose machines keep nothing, or on a lent device (experiments/on_device.sh --bring=ARCHIVE); an
SFT base runs only while a cell that starts from it is unfinished, and before new cells join
restored ones its "sft" cell must test as the archived one did (a base trained again on another
machine is not bitwise the same, check_base_matches_archive).

Outputs in DIR:
- ablation.md / ablation.csv: mean ± std over seeds (ddof 1) of recall/ndcg@5,10 (and @20 when
  every cell reports it: eval.beam_size >= 20), eCPM@10, semantic@10, valid rate, sign agreement
  (+ true_business@10, true_relevance@10 on the synthetic world); ablation.md adds the ranking
  diagnostics (DIAGNOSTICS_TABLE: coverage@10, recall@10 by follows / not follows and by
  target-popularity quintile, history and popular shares, first SID codes; also in
  diagnostics.csv) of the cells that report them; ablation.json holds both tables, the
  trade-off and ground-truth summaries below and every bootstrap entry (results-file form).
- tradeoff.png / .svg: semantic@10 against eCPM@10 (means, std bars), the sweep joined and its
  Pareto front shaded, one marker per scheme.
- Hypervolume (both objectives maximised): reference point = componentwise minimum over all rows
  of the table (benchmarks protocol), so values compare within one table only. Per row: the
  area its point dominates (hv; hv_norm divided by the table's bounding box), and hv_gain =
  HV(sweep + point) - HV(sweep), > 0 when the point pushes past the fixed-weight front.
- Ground-truth utility (synthetic world): true_business@10 and true_relevance@10 are min-max
  normalised to [0, 1] over the table's rows and the oracle front (the best top-10 lists any
  recommender could give, traced by the rl stage into rl/true_front.json); utility = their mean,
  true_hv = their product, front_gap = the row's IGD+ distance to the oracle front (0 = on it).
  truth_tradeoff.png plots the rows against that front.
- bootstrap.md / .json: paired bootstrap over test users of each row - sft on recall@10 and
  ndcg@10 (and eCPM@10, semantic@10, the truth, from rl/test_rewards.npz), per seed and on
  per-user means over seeds, from each cell's rl/test_rankings.npz. With --reference=ROW
  (e.g. sft_continued), bootstrap_<ROW>.md / .json hold each other row - ROW too (not sft:
  ROW - sft is in bootstrap.md), and ablation.md summarises both.
- --export=PATH: the table as a results file (benchmarks.md "Results files"; see
  ablation_results_file): a system per row with every rl result, the bootstrap entries against
  sft and the reference, provenance, and what each row ran ("cells").

experiments/ablation.py is the command line; the logic lives here so tests and other runners
can import it (absl flags may be defined once per process).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, atomic_write, read_json, write_json
from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.evaluation.bootstrap import BootstrapResult
from sgrec_jax.evaluation.paired import (
    BOOTSTRAP_METRICS,
    SEED_MEAN,
    UserMetrics,
    bootstrap_json,
    bootstrap_markdown,
    paired_bootstrap_by_seed,
    user_metrics,
    with_rewards,
)
from sgrec_jax.evaluation.pareto import (
    front_distance,
    hypervolume_2d,
    minmax_normalise,
    pareto_mask,
    reference_point,
)
from sgrec_jax.evaluation.plots import PlotPoint, tradeoff_plot
from sgrec_jax.evaluation.results_file import (
    agreed_value,
    bootstrap_entries,
    merged_provenance,
    results_file,
)
from sgrec_jax.evaluation.tables import ResultsTable, results_table, to_csv, to_markdown
from sgrec_jax.rl.estimators import ESTIMATORS
from sgrec_jax.rl.evaluation import DEEP_METRICS
from sgrec_jax.stages.cell_archive import (
    CELLS_DIR,
    RANKINGS,
    archive_cell,
    cell_path,
    restore_cells,
)
from sgrec_jax.stages.multi_seed import DIAGNOSTIC_METRICS, FOLLOWS_COUNT_METRICS
from sgrec_jax.stages.pipeline import RESULTS_FILE, check_config, run_pipeline
from sgrec_jax.stages.rl import TEST_REWARDS_FILE, TRUE_FRONT_FILE, backfill_test_rewards
from sgrec_jax.stages.runs import run_or_load
from sgrec_jax.stages.variants import Variant, apply_variant

SFT = "sft"  # The start policy: config.rl.num_steps = 0.
SWEEP_ESTIMATOR = "weighted_sum"
BASE_STAGES = ("sids", "sft")
BASE_DIR = "sft_base"
PER_SEED_BASES_DIR = "sft_bases"  # --sft_per_seed: sft_bases/seed_<s>.
REWARDS = os.path.join("rl", TEST_REWARDS_FILE)
PREFIX = "rl/"  # The rl stage's keys in results.json.
BUSINESS, SEMANTIC = "ecpm@10", "semantic@10"
TRUE_BUSINESS, TRUE_RELEVANCE = "true_business@10", "true_relevance@10"
TABLE_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", BUSINESS, SEMANTIC,
                 "valid_rate", "sign_agreement")
REWARD_METRICS = (BUSINESS, SEMANTIC, TRUE_BUSINESS, TRUE_RELEVANCE)
# The second table: what the top-10 lists hold (sgrec_jax/evaluation/diagnostics.py).
DIAGNOSTICS_TABLE = ("coverage@10", *DIAGNOSTIC_METRICS)
# A variant cell runs only the rl stage from the shared SFT base: it may change these sections.
VARIANT_SECTIONS = ("rl", "eval")
CELL_FIELDS = ("rl.init_workdir",)  # Set by the ablation for every cell.
# Per row of the results file: what the cell ran (from its stored config).
ROW_FIELDS = ("estimator", "channels", "num_steps", "pg_weight", "nll_weight", "beta")


Results = dict[str, dict[int, dict[str, Any]]]  # cell name -> seed -> results.json
Comparisons = dict[tuple[str, str], dict[str, dict[str, BootstrapResult]]]  # (a, b) -> a - b


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the table.

    Attributes:
      scheme: SFT, an estimator name, or None for a variant.
      weight: the business weight of a weighted_sum sweep point.
      variant: config overrides (sgrec_jax/stages/variants.py) on top of the config as given,
        e.g. SFT continued by NLL alone, or an estimator with an NLL anchor; the row is named
        by the variant.
    """

    scheme: str | None
    weight: float | None = None
    variant: Variant | None = None

    @property
    def name(self) -> str:
        if self.variant is not None:
            return self.variant.name
        return self.scheme if self.weight is None else f"{self.scheme}_w{self.weight:g}"


def check_variant_fields(variant: Variant) -> None:
    """A variant may change only VARIANT_SECTIONS fields, not CELL_FIELDS, and not take the
    start policy's row name; ValueError naming the variant and the field."""
    if variant.name == SFT:
        raise ValueError(f"variant {SFT!r}: the name is the start policy's row (--schemes={SFT})")
    for field in variant.overrides:
        if field in CELL_FIELDS:
            raise ValueError(f"variant {variant.name!r}, field {field!r}: the ablation sets it "
                             "for every cell (the shared SFT base)")
        if field.split(".", 1)[0] not in VARIANT_SECTIONS:
            raise ValueError(
                f"variant {variant.name!r}, field {field!r}: a cell runs only the rl stage from "
                "the shared SFT base, so a variant may change only "
                f"{', '.join(s + '.*' for s in VARIANT_SECTIONS)} fields"
            )


def plan_cells(schemes: Sequence[str], sweep: Sequence[float],
               variants: Sequence[Variant] = ()) -> list[Cell]:
    """The schemes' cells in the order given, the variants', then one weighted_sum cell per
    sweep weight. Variants are checked by check_variant_fields."""
    for variant in variants:
        check_variant_fields(variant)
    cells = ([Cell(s) for s in schemes] + [Cell(None, variant=v) for v in variants]
             + [Cell(SWEEP_ESTIMATOR, w) for w in sweep])
    names = [c.name for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"cells repeat: {', '.join(names)}")
    if not cells:
        raise ValueError("no schemes, variants or sweep: nothing to run")
    return cells


def check_reference(cells: Sequence[Cell], reference: str | None) -> str | None:
    """--reference: None (or empty) for none, else a row other than sft."""
    if not reference:
        return None
    names = [c.name for c in cells]
    if reference == SFT:
        raise ValueError(f"--reference={SFT}: every row is compared with {SFT} already; name "
                         "another row (e.g. sft_continued) or leave it empty")
    if reference not in names:
        raise ValueError(f"--reference={reference} is not a row ({', '.join(names)})")
    return reference


def parse_export_names(items: Sequence[str], cells: Sequence[Cell]) -> dict[str, str]:
    """--export_names CELL=ROW,...: the results file's name for a row (benchmarks.md names RL
    rows by scheme and channels, `single:rank`, `a2po:rank+psj`, `sft_continued`, which are not
    directory names). Every CELL must be a planned row and the renamed rows must stay distinct."""
    names, rows = {}, [c.name for c in cells]
    for item in items:
        cell, sep, row = item.partition("=")
        cell, row = cell.strip(), row.strip()
        if not sep or not cell or not row:
            raise ValueError(f"--export_names: {item!r} is not CELL=ROW")
        if cell not in rows:
            raise ValueError(f"--export_names: {cell!r} is not a row ({', '.join(rows)})")
        if cell in names:
            raise ValueError(f"--export_names: {cell!r} is named twice")
        names[cell] = row
    exported = [names.get(r, r) for r in rows]
    clashes = sorted({r for r in exported if exported.count(r) > 1})
    if clashes:
        raise ValueError(f"--export_names: several rows would be exported as {', '.join(clashes)}")
    return names


def cell_dir(workdir: str, cell: Cell, seed: int) -> str:
    return os.fspath(cell_path(workdir, cell.name, seed))


def sweep_weights(channels: Sequence[str], weight: float) -> dict[str, Any]:
    """weighted_sum options: weight w on channels[0] (business), 1 - w on channels[1] (semantic).

    Weights are given by channel name, so any other configured channel gets weight 0.
    """
    if len(channels) != 2 or channels[0] == channels[1]:
        raise ValueError(f"the sweep needs two channels (business, semantic), got {channels}")
    options = ESTIMATORS.options(SWEEP_ESTIMATOR)
    options["weights"] = {channels[0]: weight, channels[1]: 1.0 - weight}
    return options


def sweep_channels(config: ConfigDict, names: Sequence[str] = ()) -> tuple[str, str]:
    """The (business, semantic) channels of the sweep: `names`, else config.rl.channels' first
    two (the rl configs list the business channel first)."""
    names = tuple(names) or tuple(config.rl.channels)[:2]
    if len(names) != 2:
        raise ValueError(
            f"the sweep needs a business and a semantic channel, got {', '.join(names)}; "
            "pass --sweep_channels=BUSINESS,SEMANTIC"
        )
    return names


def cell_config(
    config: ConfigDict, cell: Cell, seed: int, init_workdir: str,
    channels: Sequence[str] = (),
) -> ConfigDict:
    """The rl-only config of one cell; `channels` as sweep_channels takes them.

    config.rl.estimator_options holds options by estimator name (the rl stage reads the entry
    of config.rl.estimator), so a scheme cell runs with the config's entry for that scheme and a
    sweep cell with the weighted_sum entry, its weights replaced by the sweep's. A variant cell
    runs the config with the variant's overrides (its estimator unless it overrides
    rl.estimator); ValueError naming the variant and the field when one does not apply.
    """
    if cell.variant is not None:
        cell_config, _ = apply_variant(config, cell.variant)
    else:
        cell_config = config.copy_and_resolve_references()
    cell_config.seed = seed
    cell_config.stages = ("rl",)
    cell_config.rl.init_workdir = init_workdir
    if cell.variant is not None:
        return cell_config
    if cell.scheme == SFT:
        cell_config.rl.num_steps = 0
        return cell_config
    cell_config.rl.estimator = cell.scheme
    if cell.weight is not None:
        options = sweep_weights(sweep_channels(config, channels), cell.weight)
        configured = config.rl.estimator_options.get(cell.scheme, {})
        options.update({k: v for k, v in configured.items() if k != "weights"})
        with cell_config.unlocked():
            cell_config.rl.estimator_options[cell.scheme] = ConfigDict(options)
    return cell_config


def prepare_sft(
    config: ConfigDict, workdir: str, run: Callable[[ConfigDict, str], dict] = run_pipeline,
    *, dry: bool = False, defaults: ConfigDict | None = None, seed: int | None = None,
) -> str:
    """The SFT workdir the cells start from: DIR/sft_base, after running the config's
    sids/sft stages there once (skipped when finished, or when dry), else config.rl.init_workdir.
    With `seed` (--sft_per_seed): DIR/sft_bases/seed_<seed>, the base stages run with
    config.seed = seed; ValueError when the config has no base stages to run per seed.
    defaults as in `runs.check_same_config`.
    """
    stages = tuple(s for s in config.stages if s in BASE_STAGES)
    if not stages:
        if seed is not None:
            raise ValueError(
                "--sft_per_seed trains one SFT base per seed, so config.stages must list "
                f"'sids'/'sft' (got {tuple(config.stages)}); to start every cell from one "
                "existing SFT run, set config.rl.init_workdir without --sft_per_seed"
            )
        if not config.rl.init_workdir:
            raise ValueError(
                "config.stages lists neither 'sids' nor 'sft', so config.rl.init_workdir must "
                "name the SFT workdir to start from"
            )
        return os.fspath(as_path(config.rl.init_workdir))
    if seed is None:
        directory, label = os.fspath(as_path(workdir) / BASE_DIR), "sft base"
    else:
        directory = os.fspath(as_path(workdir) / PER_SEED_BASES_DIR / f"seed_{seed}")
        label = f"sft base/seed_{seed}"
    if not dry:
        base = config.copy_and_resolve_references()
        base.stages = stages
        if seed is not None:
            base.seed = seed
        run_or_load(base, directory, label, ignore_sections=("rl",), run=run,
                    defaults=defaults)
    return directory


def run_cells(
    config: ConfigDict,
    workdir: str,
    cells: Sequence[Cell],
    seeds: Sequence[int],
    run: Callable[[ConfigDict, str], dict] = run_pipeline,
    channels: Sequence[str] = (),
    defaults: ConfigDict | None = None,
    sft_per_seed: bool = False,
    archive: str | None = None,
) -> Results:
    """Runs the SFT base, then every unfinished (cell, seed), seeds outermost; every result.

    With sft_per_seed, each seed's base runs before that seed's cells (see the module
    docstring), and the cells' reward models live in DIR/rewards unless
    config.rl.rewards_workdir is set. All cell configs (a variant's overrides too) are built and
    checked first, so a bad scheme name or override fails before any training. With `defaults`
    (the code's default config), a finished cell whose config lacks a field added since passes
    when the field holds its default (`runs.check_same_config`).

    With `archive` (sgrec_jax/stages/cell_archive.py), the archived cells the workdir lacks are
    restored into it first, and every cell is archived as soon as it has finished (or checked
    against its archived copy). An SFT base is trained only when a cell that starts from it has
    not finished, so cells restored on a fresh machine cost no SFT run; when one is, its "sft"
    cell is evaluated again and must equal the archived one before the new cells join the
    restored ones (check_base_matches_archive).
    """
    workdir = as_path(workdir)
    restored = (restore_cells(archive, os.fspath(workdir), [c.name for c in cells], seeds)
                if archive else [])
    bases = {seed: prepare_sft(config, workdir, dry=True, seed=seed if sft_per_seed else None)
             for seed in seeds}
    configs = {
        (cell.name, seed): cell_config(config, cell, seed, bases[seed], channels)
        for seed in seeds for cell in cells
    }
    if sft_per_seed:  # One set of reward models for every seed's cells.
        for cell_config_ in configs.values():
            if not cell_config_.rl.rewards_workdir:
                cell_config_.rl.rewards_workdir = os.fspath(workdir)
    for (name, _), cell_config_ in configs.items():
        try:
            check_config(cell_config_)
        except (ValueError, UnknownNameError) as e:
            raise ValueError(f"cell {name}: {e}") from None
    def unfinished(seeds_: Sequence[int]) -> bool:
        return any(not (cell_path(workdir, cell.name, seed) / RESULTS_FILE).exists()
                   for seed in seeds_ for cell in cells)

    if not sft_per_seed and unfinished(seeds):
        prepare_sft(config, workdir, run, defaults=defaults)
    results: Results = {cell.name: {} for cell in cells}
    for seed in seeds:
        if sft_per_seed and unfinished([seed]):
            prepare_sft(config, workdir, run, defaults=defaults, seed=seed)
        if archive and unfinished([seed]):
            check_base_matches_archive(
                cell_config(config, Cell(SFT), seed, bases[seed], channels), workdir, archive,
                seed, [c for c in restored if c.endswith(f"/seed_{seed}")], run=run,
                defaults=defaults,
            )
        for cell in cells:
            label = f"cell {cell.name}/seed_{seed}"
            results[cell.name][seed] = run_or_load(
                configs[cell.name, seed], cell_dir(workdir, cell, seed), label, run=run,
                defaults=defaults,
            )
            if archive:
                archive_cell(cell_dir(workdir, cell, seed),
                             cell_path(archive, cell.name, seed), label, defaults)
    return results


def check_base_matches_archive(
    sft_config: ConfigDict, workdir: epath.Path, archive: str, seed: int,
    restored: Sequence[str], run: Callable[[ConfigDict, str], dict] = run_pipeline,
    defaults: ConfigDict | None = None,
) -> None:
    """Before new cells of `seed` run beside cells restored from `archive`: the SFT base they
    start from must be the base the restored cells started from.

    A base trained again is not bitwise the same on another machine (XLA's CPU code differs with
    the processor), so cells from two bases would form one table unnoticed. The base's "sft"
    cell (its test metrics) is its fingerprint: when the archive holds it for this seed, it is
    evaluated again here from the base in use (a restored copy is set aside first) and compared
    with the archived one (`cell_archive.archive_cell`). On a mismatch the restored cells of this
    seed are removed from `workdir` (the archive keeps them) and ValueError says what differs;
    with no archived "sft" cell for this seed, the restored cells cannot be checked and a
    warning says so. `restored`: the cells of this seed that restore_cells copied
    ("row/seed_<s>").
    """
    if not restored:
        return
    archived = cell_path(archive, SFT, seed)
    if not (archived / RESULTS_FILE).exists():
        logging.warning("seed %d: the cells restored from %s (%s) cannot be checked against the "
                        "SFT base in use, the archive has no %s cell for this seed", seed,
                        archive, ", ".join(restored), SFT)
        return
    fresh = cell_path(workdir, SFT, seed)
    label = f"cell {SFT}/seed_{seed} (the SFT base's check)"
    if f"{SFT}/seed_{seed}" in restored:
        fresh.rmtree()
    run_or_load(sft_config, os.fspath(fresh), label, run=run, defaults=defaults)
    try:
        archive_cell(fresh, archived, label, defaults)
    except ValueError as error:
        for name in restored:
            if name != f"{SFT}/seed_{seed}":
                (workdir / CELLS_DIR / name).rmtree()
        raise ValueError(
            f"seed {seed}: the SFT base in {workdir} is not the one the cells archived in "
            f"{archive} started from, so new cells cannot join them ({error}). Its restored "
            f"cells ({', '.join(restored)}) were removed from {workdir}; run this seed's cells "
            "from this base into another --archive, or keep the archive's base"
        ) from None
    logging.info("seed %d: the SFT base reproduces the archived %s cell; %d restored cells join "
                 "the new ones", seed, SFT, len(restored))


def load_finished(workdir: str, cells: Sequence[Cell], seeds: Sequence[int]) -> Results:
    """The results of the (cell, seed)s that have finished; cells with none are left out."""
    results: Results = {}
    for cell in cells:
        for seed in seeds:
            result = read_json(os.path.join(cell_dir(workdir, cell, seed), RESULTS_FILE))
            if result is not None:
                results.setdefault(cell.name, {})[seed] = result
    return results


def _row_metrics(result: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, Any]:
    return {m: result[PREFIX + m] for m in metrics}


def ablation_table(results: Results) -> ResultsTable:
    """Mean ± std over seeds per cell of TABLE_METRICS, with recall@20 and ndcg@20 after the
    @10 columns and the truth metrics at the end when every run reports them."""
    every = [r for by_seed in results.values() for r in by_seed.values()]

    def reported(names: Sequence[str]) -> tuple[str, ...]:
        return tuple(m for m in names if all(PREFIX + m in r for r in every))

    cut = TABLE_METRICS.index("ndcg@10") + 1
    metrics = (TABLE_METRICS[:cut] + reported(DEEP_METRICS) + TABLE_METRICS[cut:]
               + reported((TRUE_BUSINESS, TRUE_RELEVANCE)))
    for name, by_seed in results.items():
        for seed, result in by_seed.items():
            missing = [PREFIX + m for m in metrics if PREFIX + m not in result]
            if missing:
                raise ValueError(
                    f"cell {name} seed {seed}: results.json lacks {', '.join(missing)}"
                )
    return results_table(
        {name: [_row_metrics(r, metrics) for r in by_seed.values()]
         for name, by_seed in results.items()},
        metrics,
    )


def diagnostics_table(results: Results) -> tuple[ResultsTable | None, list[str]]:
    """Mean ± std over seeds of DIAGNOSTICS_TABLE (plus FOLLOWS_COUNT_METRICS where every such
    cell reports them) for the cells whose every seed reports them (cells that finished before
    the rl stage reported diagnostics do not), and the other cells' names. None when no cell
    reports them."""
    reporting, missing = {}, []
    for name, by_seed in results.items():
        if all(PREFIX + m in r for r in by_seed.values() for m in DIAGNOSTICS_TABLE):
            reporting[name] = by_seed
        else:
            missing.append(name)
    # The follows-by-count columns join when every reporting cell has them.
    columns = DIAGNOSTICS_TABLE + tuple(
        m for m in FOLLOWS_COUNT_METRICS
        if reporting and all(PREFIX + m in r for s in reporting.values() for r in s.values())
    )
    rows = {name: [_row_metrics(r, columns) for r in by_seed.values()]
            for name, by_seed in reporting.items()}
    return (results_table(rows, columns) if rows else None), missing


def _column(table: ResultsTable, metric: str, stat: str = "mean") -> np.ndarray:
    values = table.mean_sm if stat == "mean" else table.std_sm
    return values[:, table.metrics.index(metric)]


def tradeoff_summary(table: ResultsTable, sweep_rows: Sequence[str]) -> dict[str, Any]:
    """Hypervolumes of each row's (eCPM@10, semantic@10) mean and of the sweep's front."""
    points_n2 = np.stack([_column(table, BUSINESS), _column(table, SEMANTIC)], 1)
    ref = reference_point(points_n2)
    box = float(np.prod(points_n2.max(0) - ref))
    index = {name: i for i, name in enumerate(table.systems)}
    sweep_n2 = points_n2[[index[name] for name in sweep_rows]]
    sweep_hv = hypervolume_2d(sweep_n2, ref) if len(sweep_n2) else 0.0
    on_front = pareto_mask(points_n2)
    rows = {}
    for name, i in index.items():
        point = points_n2[i]
        hv = hypervolume_2d(point[None], ref)
        rows[name] = {
            BUSINESS: float(point[0]), SEMANTIC: float(point[1]), "hv": hv,
            "hv_norm": hv / box if box > 0 else 0.0,
            "hv_gain": hypervolume_2d(np.concatenate([sweep_n2, point[None]]), ref) - sweep_hv,
            "dominated_by_sweep": bool(np.any(
                np.all(sweep_n2 >= point, 1) & np.any(sweep_n2 > point, 1)
            )),
            "on_table_front": bool(on_front[i]),
        }
    return {
        "reference_point": {BUSINESS: float(ref[0]), SEMANTIC: float(ref[1])},
        "box_area": box, "sweep_hv": sweep_hv, "sweep_hv_norm": sweep_hv / box if box > 0 else 0.0,
        "rows": rows,
    }


def backfill_rewards(workdir: str, results: Results) -> int:
    """Scores the test rankings of finished cells that predate rl/test_rewards.npz (so the
    bootstrap can pair eCPM@10 and semantic@10 too); returns how many it wrote. A cell it
    cannot score (no stored config, rankings or reward models) is logged and skipped."""
    written = 0
    for name, by_seed in results.items():
        for seed in by_seed:
            directory = os.path.join(workdir, CELLS_DIR, name, f"seed_{seed}")
            try:
                wrote = backfill_test_rewards(directory)
            except (ValueError, OSError) as e:  # The bootstrap then leaves the rewards out.
                logging.warning("cell %s/seed_%d: no per-user rewards: %s", name, seed, e)
                continue
            if wrote:
                logging.info("cell %s/seed_%d: wrote %s from its saved rankings", name, seed,
                             REWARDS)
                written += 1
    return written


def load_true_front(workdir: str, results: Results) -> np.ndarray | None:
    """float64 [W, 2] (true_business@10, true_relevance@10) of the oracle front the rl stage
    wrote on the synthetic world (any finished cell; they share the test split), else None."""
    for name, by_seed in results.items():
        for seed in by_seed:
            path = os.path.join(workdir, CELLS_DIR, name, f"seed_{seed}", "rl", TRUE_FRONT_FILE)
            front = read_json(path)
            if front is not None:
                return np.stack([front[TRUE_BUSINESS], front[TRUE_RELEVANCE]], 1)
    return None


def truth_summary(table: ResultsTable,
                  front_m2: np.ndarray | None = None) -> dict[str, dict[str, float]] | None:
    """Per row: normalised true business and relevance, utility (mean) and true_hv (product);
    with the oracle front (load_true_front), front_gap: the row's IGD+ distance to it.

    Rows (and the front) are min-max normalised over the rows and the front's points together
    when there is a front, else over the rows.
    """
    if TRUE_BUSINESS not in table.metrics:
        return None
    truth_n2 = np.stack([_column(table, TRUE_BUSINESS), _column(table, TRUE_RELEVANCE)], 1)
    span_n2 = truth_n2 if front_m2 is None else np.concatenate([truth_n2, front_m2])
    norm_n2 = minmax_normalise(truth_n2, span_n2)
    gaps_n = (np.full(len(truth_n2), np.nan) if front_m2 is None
              else front_distance(norm_n2, minmax_normalise(front_m2, span_n2)))
    return {
        name: {
            TRUE_BUSINESS: float(truth_n2[i, 0]), TRUE_RELEVANCE: float(truth_n2[i, 1]),
            "business_norm": float(norm_n2[i, 0]), "relevance_norm": float(norm_n2[i, 1]),
            "utility": float(norm_n2[i].mean()), "true_hv": float(norm_n2[i].prod()),
            "front_gap": float(gaps_n[i]),
        }
        for i, name in enumerate(table.systems)
    }


def bootstrap_against(
    workdir: str, results: Results, base: str = SFT, *, num_resamples: int, bootstrap_seed: int
) -> dict[str, dict[str, dict[str, BootstrapResult]]]:
    """row -> paired_bootstrap_by_seed(row, base) over the seeds both finished: recall@10 and
    ndcg@10 from the saved rankings, and eCPM@10 and semantic@10 (+ the ground truth) from
    rl/test_rewards.npz where every compared cell has it with finite values.

    Every row but `base` and sft (against another base, sft - base is base - sft negated).
    Empty when `base` has no finished cell.
    """
    if base not in results:
        return {}

    def cell_values(directory: str) -> UserMetrics:
        values = user_metrics(os.path.join(directory, RANKINGS), BOOTSTRAP_METRICS)
        rewards = os.path.join(directory, REWARDS)
        if not epath.Path(rewards).exists():
            return values
        return with_rewards(values, rewards, REWARD_METRICS)

    def seed_dir(name: str, seed: int) -> str:
        return os.path.join(workdir, CELLS_DIR, name, f"seed_{seed}")

    out = {}
    for name, by_seed in results.items():
        seeds = [s for s in by_seed if s in results[base]]
        if name in (base, SFT) or not seeds:
            continue
        pairs = {seed: (cell_values(seed_dir(name, seed)), cell_values(seed_dir(base, seed)))
                 for seed in seeds}
        shared = [m for m in (*BOOTSTRAP_METRICS, *REWARD_METRICS)
                  if all(m in v.values and np.all(np.isfinite(v.values[m]))
                         for pair in pairs.values() for v in pair)]
        pairs = {seed: tuple(dataclasses.replace(v, values={m: v.values[m] for m in shared})
                             for v in pair) for seed, pair in pairs.items()}
        out[name] = paired_bootstrap_by_seed(
            pairs, num_resamples=num_resamples, bootstrap_seed=bootstrap_seed
        )
    return out


def _fmt(value: float, digits: int = 4) -> str:
    return "" if math.isnan(value) else f"{value:.{digits}f}"


def _tradeoff_markdown(tradeoff: Mapping[str, Any]) -> str:
    ref = tradeoff["reference_point"]
    lines = [
        f"Reference point (componentwise minimum of the table): eCPM@10 {ref[BUSINESS]:.4f}, "
        f"semantic@10 {ref[SEMANTIC]:.4f}. Fixed-weight sweep front: HV "
        f"{tradeoff['sweep_hv']:.6g} ({tradeoff['sweep_hv_norm']:.4f} of the table's box).",
        "",
        "| system | eCPM@10 | semantic@10 | HV | HV (norm) | HV gain over sweep | "
        "dominated by sweep | on table front |",
        "|---|---|---|---|---|---|---|---|",
    ]
    yes_no = {True: "yes", False: "no"}
    for name, r in tradeoff["rows"].items():
        lines.append(
            f"| {name} | {r[BUSINESS]:.4f} | {r[SEMANTIC]:.4f} | {r['hv']:.6g} | "
            f"{r['hv_norm']:.4f} | {r['hv_gain']:.6g} | {yes_no[r['dominated_by_sweep']]} | "
            f"{yes_no[r['on_table_front']]} |"
        )
    return "\n".join(lines) + "\n"


def _truth_markdown(truth: Mapping[str, Mapping[str, float]]) -> str:
    gaps = {name: r["front_gap"] for name, r in truth.items() if not math.isnan(r["front_gap"])}
    lines = [
        "Ground truth of the synthetic world, min-max normalised over the rows and the oracle "
        "front (the top-10 lists of w true_business + (1 - w) true_relevance over the catalog, "
        "rewards/truth.py); utility = mean of the two normalised values, true HV = their "
        "product, front gap = IGD+ distance to the oracle front (0 = on it).",
        "",
        "| system | true_business@10 | true_relevance@10 | business (norm) | relevance (norm) | "
        "utility | true HV | front gap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in truth.items():
        lines.append(
            f"| {name} | {r[TRUE_BUSINESS]:.4f} | {r[TRUE_RELEVANCE]:.4f} | "
            f"{r['business_norm']:.4f} | {r['relevance_norm']:.4f} | {r['utility']:.4f} | "
            f"{r['true_hv']:.4f} | {_fmt(r['front_gap'])} |"
        )
    if gaps:
        closest = min(gaps, key=gaps.get)
        lines += ["", f"Closest to the oracle front: {closest} (gap {gaps[closest]:.4f})."]
    return "\n".join(lines) + "\n"


def _bootstrap_summary_markdown(boot: Mapping[str, Mapping[str, Mapping[str, Any]]],
                                base: str = SFT) -> str:
    """One row per (system, metric) on the pooled comparison (seed_mean, or the only seed)."""
    lines = [
        f"| system | seeds | metric | system - {base} | CI | p two-sided |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_seeds in boot.items():
        pooled = SEED_MEAN if SEED_MEAN in by_seeds else next(iter(by_seeds))
        for metric, r in by_seeds[pooled].items():
            lines.append(
                f"| {name} | {pooled} | {metric} | {r.mean_diff:+.4f} | "
                f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] | {r.p_value_two_sided:.4f} |"
            )
    return "\n".join(lines) + "\n"


def _row_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """ROW_FIELDS of the rl config a cell ran (None where an older config lacks one) and the
    options of its estimator."""
    rl = result.get("provenance", {}).get("config", {}).get("rl", {})
    record = {field: rl.get(field) for field in ROW_FIELDS}
    record["estimator_options"] = rl.get("estimator_options", {}).get(rl.get("estimator"))
    return record


def ablation_results_file(
    workdir: str, results: Results, comparisons: Comparisons,
    variants: Mapping[str, Variant] | None = None, export_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The table as a results file (benchmarks.md "Results files",
    sgrec_jax/evaluation/results_file.py): one system per cell, named by the cell, with every
    numeric "rl/" result of each seed (prefix dropped: recall@5 ... ndcg@20, coverage@10,
    valid_rate, the diag/ keys, ecpm@10, semantic@10, sign_agreement, best_step, ...); the
    bootstrap entries of `comparisons`; provenance merged from the cells' results.json (sources
    and configs by cell directory). Extra key "cells": {row: ROW_FIELDS of its config, its
    estimator's options, and "overrides" {field: text} for a variant}, so a row's name need not
    say what it ran. `export_names` {cell: row} (parse_export_names) renames rows in the file
    (systems, bootstrap entries, cells, provenance sources; each renamed row's record keeps its
    "cell"); the others, and names of rows that have not finished, are left as they are.
    """
    variants = variants or {}
    export_names = export_names or {}

    def row(name: str) -> str:
        return export_names.get(name, name)

    directories = {name: os.path.join(workdir, CELLS_DIR, name) for name in results}
    runs = {f"{name}/seed_{seed}": result
            for name, by_seed in results.items() for seed, result in by_seed.items()}
    for run, result in runs.items():
        if "provenance" not in result or "dataset" not in result:
            raise ValueError(f"{run}: its results.json has no provenance or dataset record")
    provenance = merged_provenance(
        {run: result["provenance"] for run, result in runs.items()},
        sources={row(name): directory for name, directory in directories.items()},
        configs={directories[name]: by_seed[min(by_seed)]["provenance"].get("config")
                 for name, by_seed in results.items()},
    )
    data = results_file(
        dataset=agreed_value({run: r["dataset"]["name"] for run, r in runs.items()}, "dataset"),
        users=agreed_value({run: r[PREFIX + "num_users"] for run, r in runs.items()},
                           "the number of test users"),
        items=agreed_value({run: r["dataset"]["items"] for run, r in runs.items()}, "items"),
        systems={row(name): {seed: {k.removeprefix(PREFIX): v for k, v in result.items()
                                    if k.startswith(PREFIX)}
                             for seed, result in by_seed.items()}
                 for name, by_seed in results.items()},
        bootstrap={(row(a), row(b)): r for (a, b), r in comparisons.items()},
        provenance=provenance,
    )
    data["cells"] = {
        row(name): {**_row_record(by_seed[min(by_seed)]),
                    **({"overrides": dict(variants[name].overrides)} if name in variants else {}),
                    **({"cell": name} if name in export_names else {})}
        for name, by_seed in results.items()
    }
    return data


def _write_bootstrap(stem: str, boot: Mapping[str, Mapping[str, Any]], base: str) -> None:
    """<stem>.md (a section per row) and <stem>.json ({row: bootstrap_json(row, base)})."""
    details = "".join(f"## {name}\n\n{bootstrap_markdown(b, name, base)}\n"
                      for name, b in boot.items())
    atomic_write(stem + ".md", lambda f: f.write(details.encode()))
    write_json(stem + ".json", {name: bootstrap_json(b, name, base) for name, b in boot.items()})


def summarize(
    workdir: str, results: Results, sweep_rows: Sequence[str], *, reference: str | None = None,
    variants: Sequence[Variant] = (), export: str | None = None, num_resamples: int = 10_000,
    bootstrap_seed: int = 0, export_names: Mapping[str, str] | None = None,
) -> str:
    """Writes ablation.md/.csv/.json, diagnostics.csv, tradeoff.png/.svg, bootstrap.md/.json
    (each row vs sft), with a reference row bootstrap_<reference>.md/.json (each row vs it),
    and with `export` the results file there (ablation_results_file); returns the markdown.

    variants: those of the table's variant cells (their overrides go in the results file).
    """
    table = ablation_table(results)
    diagnostics, undiagnosed = diagnostics_table(results)
    tradeoff = tradeoff_summary(table, sweep_rows)
    truth = truth_summary(table, load_true_front(workdir, results))
    bases = [SFT] + ([reference] if reference else [])
    boots = {base: bootstrap_against(workdir, results, base, num_resamples=num_resamples,
                                     bootstrap_seed=bootstrap_seed)
             for base in bases}
    if reference and reference not in results:
        logging.warning("the reference row %s has no finished cell: no comparison with it",
                        reference)
    index = {name: i for i, name in enumerate(table.systems)}

    def point(name: str, label: str) -> PlotPoint:
        i = index[name]
        return PlotPoint(label, *(float(_column(table, m, stat)[i])
                                  for stat in ("mean", "std") for m in (BUSINESS, SEMANTIC)))

    sweep = [point(name, f"w={name.rsplit('_w', 1)[1]}") for name in sweep_rows]
    others = [point(name, name) for name in table.systems if name not in sweep_rows]
    seeds = sorted({s for by_seed in results.values() for s in by_seed})
    tradeoff_plot(
        os.path.join(workdir, "tradeoff"), sweep, others, xlabel="eCPM@10 (business)",
        ylabel="semantic score@10", title=f"Business vs semantic, mean ± std over seeds "
        f"{','.join(map(str, seeds))}; sweep HV {tradeoff['sweep_hv_norm']:.3f} (normalised)",
    )

    front_m2 = load_true_front(workdir, results)
    if truth is not None and front_m2 is not None:
        weights = np.linspace(0.0, 1.0, len(front_m2))
        oracle = [PlotPoint(f"w={w:g}" if w in (0.0, 0.5, 1.0) else "", *xy)
                  for w, xy in zip(weights, front_m2, strict=True)]
        tradeoff_plot(
            os.path.join(workdir, "truth_tradeoff"), oracle,
            [PlotPoint(name, *(float(_column(table, m, stat)[index[name]])
                               for stat in ("mean", "std") for m in (TRUE_BUSINESS,
                                                                     TRUE_RELEVANCE)))
             for name in table.systems],
            xlabel="true_business@10", ylabel="true_relevance@10",
            title="Ground truth: rows against the oracle front", reference_label="oracle front",
        )

    text = f"# Ablation: {len(table.systems)} rows, seeds {', '.join(map(str, seeds))}\n\n"
    if variants:
        text += "Variants (the config with these overrides):\n\n" + "".join(
            f"- {v.name}: {v.describe()}\n" for v in variants) + "\n"
    text += (
        "Test metrics of the rl stage, mean ± std over seeds (ddof 1):\n\n"
        f"{to_markdown(table)}\n## Business vs semantic trade-off\n\n"
        f"{_tradeoff_markdown(tradeoff)}\n![trade-off](tradeoff.png)\n"
    )
    if diagnostics is not None:
        text += ("\n## Ranking diagnostics\n\nWhat the top-10 lists hold "
                 "(sgrec_jax/evaluation/diagnostics.py): recall@10 by whether the target follows "
                 "the last history item and by target-popularity quintile (q1 least popular), "
                 "history and popular shares, distinct first SID codes.\n\n"
                 f"{to_markdown(diagnostics)}")
        atomic_write(os.path.join(workdir, "diagnostics.csv"),
                     lambda f: f.write(to_csv(diagnostics).encode()))
    if undiagnosed:
        text += (f"\nNo diagnostics (finished before the rl stage reported them): "
                 f"{', '.join(undiagnosed)}.\n")
    if truth is not None:
        text += f"\n## Ground-truth utility\n\n{_truth_markdown(truth)}"
        if front_m2 is not None:
            text += "\n![ground truth](truth_tradeoff.png)\n"
    for base, boot in boots.items():
        if not boot:
            continue
        stem = "bootstrap" if base == SFT else f"bootstrap_{base}"
        text += (f"\n## Paired bootstrap against {base} (details in {stem}.md)\n\n"
                 f"{_bootstrap_summary_markdown(boot, base)}")
        _write_bootstrap(os.path.join(workdir, stem), boot, base)
    comparisons: Comparisons = {(name, base): b for base, boot in boots.items()
                                for name, b in boot.items()}
    atomic_write(os.path.join(workdir, "ablation.md"), lambda f: f.write(text.encode()))
    atomic_write(os.path.join(workdir, "ablation.csv"), lambda f: f.write(to_csv(table).encode()))

    def table_json(table: ResultsTable) -> dict[str, Any]:
        return {
            name: {"num_seeds": int(table.num_seeds_s[i]), **{
                m: {"mean": float(table.mean_sm[i, j]),
                    "std": None if math.isnan(table.std_sm[i, j]) else float(table.std_sm[i, j])}
                for j, m in enumerate(table.metrics)
            }}
            for i, name in enumerate(table.systems)
        }

    write_json(os.path.join(workdir, "ablation.json"), {
        "seeds": seeds,
        "table": table_json(table),
        "diagnostics": None if diagnostics is None else table_json(diagnostics),
        "tradeoff": tradeoff,
        "truth": truth,
        "reference": reference,
        "bootstrap": [entry for (a, b), r in comparisons.items()
                      for entry in bootstrap_entries(a, b, r)],
    })
    if export:
        write_json(export, ablation_results_file(workdir, results, comparisons,
                                                 {v.name: v for v in variants}, export_names))
        text += f"\nResults file: {export}\n"
    return text
