"""Committable copies of finished multi-seed runs, so that seeds run in different sessions or on
different machines form one table.

A multi-seed directory holds checkpoints and logs (hundreds of MB) and rarely outlives the
machine it ran on, while a Beauty seed costs 1-2 CPU hours: the three seeds of a table are run
over several sessions. A table needs far less than the directory: each seed's results.json and
config.json, and every system's test rankings for the paired bootstrap. `archive_seeds` copies
exactly those into ARCHIVE/seed_<s>/ with the multi-seed layout, the rankings cut to the
top TOP_K items (all the bootstrap metrics need) and compressed (about 0.3 MB per system on
Beauty's 22,363 test users). ARCHIVE is then itself a multi-seed directory: `--merge` and
`--compare` read it like any other, and it can be committed under docs/results/runs/.

A seed already in the archive is kept; archiving it again checks that the run reports the same
test metrics (else an error names the seed and metric). Every seed of one archive must come from
the same config up to the seed and run-control fields (stages/runs.py), so that seeds from
different sessions are seeds of one experiment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, copy_file, read_json, read_npz, write_compressed_npz
from sgrec_jax.stages.multi_seed import (
    POSTHOC_SYSTEMS,
    RANKINGS_FILE,
    SystemRuns,
    check_same_numbers,
    finished_seeds,
    load_results,
    seed_dir,
    systems_in,
)
from sgrec_jax.stages.pipeline import CONFIG_FILE, RESULTS_FILE
from sgrec_jax.stages.runs import check_same_config

TOP_K = 10  # The bootstrap metrics are recall/ndcg at 5 and 10.


def archive_rankings(source: str | os.PathLike, destination: str | os.PathLike,
                     top_k: int = TOP_K) -> None:
    """Copies a test_rankings.npz keeping users, targets and the top_k items, compressed."""
    rankings = read_npz(source)
    users_u, targets_u, items_uk = rankings["users_u"], rankings["targets_u"], rankings["items_uk"]
    if items_uk.ndim != 2 or items_uk.shape[1] < top_k:
        raise ValueError(f"{source}: items_uk has shape {items_uk.shape}, need [users, >= {top_k}]")
    write_compressed_npz(destination, users_u=users_u, targets_u=targets_u,
                         items_uk=np.ascontiguousarray(items_uk[:, :top_k]))


def _stored_config(directory: str) -> ConfigDict:
    stored = read_json(as_path(directory) / CONFIG_FILE)
    if stored is None:
        raise ValueError(f"{directory} has {RESULTS_FILE} but no {CONFIG_FILE}")
    return ConfigDict(stored)


def _check_same_experiment(
    archive: str, run_dir: str, seed: int, defaults: ConfigDict | None = None,
) -> None:
    """The run's config must equal every archived seed's, up to the seed and run control. With
    `defaults`, a field only one of them has passes when the other holds it at its default:
    checked both ways, since either the run or the archived seed may be the older one."""
    config = _stored_config(run_dir)
    for other in finished_seeds(archive):
        if other == seed:
            continue
        archived = _stored_config(seed_dir(archive, other))
        archived.seed = seed
        config.seed = other
        try:
            check_same_config(seed_dir(archive, other), config, defaults=defaults)
        except ValueError as error:
            try:  # the archived seed is the newer run
                check_same_config(run_dir, archived, defaults=defaults)
            except ValueError:
                raise ValueError(
                    f"seed {seed} of {run_dir} is not a seed of the experiment archived in "
                    f"{archive}: {error}"
                ) from None


def _archive_system(run_dir: epath.Path, out_dir: epath.Path, system: str) -> None:
    """A system's top-10 test rankings and, for a post-hoc system, its report beside them
    (rankings first: the report marks the system as present)."""
    archive_rankings(run_dir / system / RANKINGS_FILE, out_dir / system / RANKINGS_FILE)
    if system in POSTHOC_SYSTEMS:
        copy_file(run_dir / system / RESULTS_FILE, out_dir / system / RESULTS_FILE)


def archive_seeds(
    workdir: str, archive: str, seeds: Sequence[int] | None = None,
    defaults: ConfigDict | None = None,
) -> list[int]:
    """Archives `seeds` (default: every finished seed) of the multi-seed directory `workdir`
    into `archive`; returns the seeds newly archived. defaults as in `runs.check_same_config`
    (the code's default config: seeds run before and after an option was added still match)."""
    available = finished_seeds(workdir)
    seeds = available if seeds is None else list(seeds)
    missing = sorted(set(seeds) - set(available))
    if missing:
        raise ValueError(f"{workdir}: seeds {', '.join(map(str, missing))} have not finished")
    as_path(archive).mkdir(parents=True, exist_ok=True)
    results = load_results(workdir, seeds)
    archived = finished_seeds(archive)
    added = []
    for seed in seeds:
        run_dir, out_dir = as_path(seed_dir(workdir, seed)), as_path(seed_dir(archive, seed))
        systems = systems_in({seed: results[seed]})
        if seed in archived:
            kept = load_results(archive, [seed])
            kept_systems = systems_in(kept)
            for system in systems:
                if system in kept_systems:
                    check_same_numbers(SystemRuns(system, archive, kept),
                                       SystemRuns(system, workdir, {seed: results[seed]}))
                elif system in POSTHOC_SYSTEMS:  # run on the seed after it was archived
                    _archive_system(run_dir, out_dir, system)
                    logging.info("archived %s of seed %d into %s", system, seed, out_dir)
            logging.info("seed %d is already in %s with the same metrics", seed, archive)
            continue
        _check_same_experiment(archive, run_dir, seed, defaults)
        for system in systems:
            _archive_system(run_dir, out_dir, system)
        # Whole-file copies (atomic where the filesystem allows); results.json last: its
        # presence marks the archived seed as complete.
        for name in (CONFIG_FILE, RESULTS_FILE):
            copy_file(run_dir / name, out_dir / name)
        added.append(seed)
        logging.info("archived seed %d (%s) into %s", seed, ", ".join(systems), out_dir)
    return added

