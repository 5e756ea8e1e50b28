"""Committable copies of finished ablation cells, so that the cells of one RL table run in
different sessions or on different machines (a lent accelerator) form one table.

An ablation directory holds SFT bases, checkpoints and reward models (hundreds of MB) that
rarely outlive the machine they ran on, while a Beauty RL table is hours of CPU. The table needs
of each finished cell only what `ablation.summarize` reads: results.json and config.json, the
rl stage's test rankings (cut to the top TOP_K items and compressed, as seed_archive.py does) and
per-user test rewards, and on the synthetic world the oracle front. It copies exactly
those into ARCHIVE/cells/<row>/seed_<s>/ (`archive_cell`, which `ablation.run_cells` calls as
each cell finishes), the ablation layout, so ARCHIVE is itself an ablation
directory: `python -m experiments.ablation --summarize_only --workdir=ARCHIVE ...` tabulates it,
and it can be committed under docs/results/runs/.

`restore_cells` copies the archived cells a work directory has not finished back into it, so
the runner skips them, and an SFT base whose cells have all finished is not trained again
(`ablation.run_cells`); when a base must run again, its "sft" cell is evaluated and compared
with the archived one before any new cell joins the restored ones
(`ablation.check_base_matches_archive`). A cell already in the archive is kept; archiving it
again checks that it ran the same config (run control and locations aside, stages/runs.py) and
reports the same test metrics, else a ValueError names the cell and the difference.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, copy_file, read_json
from sgrec_jax.stages.pipeline import CONFIG_FILE, RESULTS_FILE
from sgrec_jax.stages.rl import TEST_REWARDS_FILE, TRUE_FRONT_FILE
from sgrec_jax.stages.runs import check_same_config
from sgrec_jax.stages.seed_archive import archive_rankings

CELLS_DIR = "cells"  # As the ablation lays its cells out: cells/<row>/seed_<s>.
RANKINGS = os.path.join("rl", "test_rankings.npz")
# Copied whole when the cell has them: per-user rewards for the bootstrap, the oracle front.
OPTIONAL_FILES = (os.path.join("rl", TEST_REWARDS_FILE), os.path.join("rl", TRUE_FRONT_FILE))
METRIC_PREFIX = "rl/"  # The rl stage's keys in results.json, compared on re-archiving.

def cell_path(workdir: str | os.PathLike, name: str, seed: int) -> epath.Path:
    """DIR/cells/<name>/seed_<seed>."""
    return as_path(workdir) / CELLS_DIR / name / f"seed_{seed}"


def _same_number(a: Any, b: Any) -> bool:
    """Equal, or both NaN (e.g. best_valid_metric of a run that never validated)."""
    return a == b or (isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _check_same_cell(kept_dir: epath.Path, run_dir: epath.Path, label: str,
                     defaults: ConfigDict | None) -> None:
    """The run and the archived copy of one cell: same config either way (either may be the
    older, see runs.check_same_config's defaults) and the same rl/ test metrics."""
    run_config, kept_config = (ConfigDict(read_json(d / CONFIG_FILE)) for d in (run_dir, kept_dir))
    try:
        check_same_config(os.fspath(kept_dir), run_config, defaults=defaults)
    except ValueError as error:
        try:
            check_same_config(os.fspath(run_dir), kept_config, defaults=defaults)
        except ValueError:
            raise ValueError(f"{label} in {run_dir} is not the cell archived in {kept_dir}: "
                             f"{error}") from None
    kept, ran = read_json(kept_dir / RESULTS_FILE), read_json(run_dir / RESULTS_FILE)
    for key in sorted(k for k in kept.keys() & ran.keys() if k.startswith(METRIC_PREFIX)):
        if isinstance(kept[key], (int, float)) and not _same_number(kept[key], ran[key]):
            raise ValueError(
                f"{label} ran in {run_dir} with other results than archived in {kept_dir} "
                f"({key}: {ran[key]} vs {kept[key]}); archive it elsewhere or remove the "
                "archived copy if the new run is the one that belongs in the table"
            )


def archive_cell(run_dir: str | os.PathLike, out_dir: str | os.PathLike, label: str,
                 defaults: ConfigDict | None = None) -> bool:
    """Copies one finished cell into out_dir; True when it was not archived before (else it is
    checked against the archived copy and left as it is)."""
    run_dir, out_dir = as_path(run_dir), as_path(out_dir)
    for name in (RESULTS_FILE, CONFIG_FILE, RANKINGS):
        if not (run_dir / name).exists():
            raise ValueError(f"{label}: {run_dir / name} does not exist, so the cell cannot be "
                             "archived (has it finished?)")
    if (out_dir / RESULTS_FILE).exists():
        _check_same_cell(out_dir, run_dir, label, defaults)
        return False
    archive_rankings(run_dir / RANKINGS, out_dir / RANKINGS)
    for name in OPTIONAL_FILES:
        if (run_dir / name).exists():
            copy_file(run_dir / name, out_dir / name)
    # results.json last: its presence marks the archived cell as complete.
    for name in (CONFIG_FILE, RESULTS_FILE):
        copy_file(run_dir / name, out_dir / name)
    return True


def restore_cells(archive: str, workdir: str, names: Sequence[str],
                  seeds: Sequence[int]) -> list[str]:
    """Copies each archived (row, seed) of names x seeds that `workdir` has not finished into
    it (the files archive_cell keeps, results.json last); returns the cells restored as
    "row/seed_<s>". The runner then checks each restored cell's config against the one asked
    for."""
    restored = []
    for name in names:
        for seed in seeds:
            source, target = cell_path(archive, name, seed), cell_path(workdir, name, seed)
            if not (source / RESULTS_FILE).exists() or (target / RESULTS_FILE).exists():
                continue
            for part in (RANKINGS, *OPTIONAL_FILES, CONFIG_FILE, RESULTS_FILE):
                if (source / part).exists():
                    copy_file(source / part, target / part)
            restored.append(f"{name}/seed_{seed}")
            logging.info("restored cell %s/seed_%d from %s", name, seed, archive)
    return restored
