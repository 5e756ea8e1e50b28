"""The experiment pipeline: load the data, run the configured stages in order, write results.

The data are `config.data.source`'s: with "memory" the whole `SeqRecDataset` is loaded; with
"array_record" the stages get the shard directory's `ShardDataset` (catalog, statistics,
training transitions: no sequences), so host memory does not grow with the interactions
(data/shard_dataset.py says what each stage reads and which refuse).

Stages (SIDs, SFT, evaluation, RL, ...) are registered by name in STAGES (by
sgrec_jax/registration.py, which every entry point imports); `config.stages` lists the ones to
run. Every stage reads and writes the shared RunContext, caches its outputs in the work
directory, and so resumes where a previous run stopped. The whole config is checked (stage,
format, registry names) before any work starts. In a multi-process run every process runs every
stage (the same computation; jitted steps span all processes' devices) and process 0 alone writes
the run's files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from typing import Any

from absl import logging
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.core.files import as_path, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.core.registry import Registry
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.load import DATASET_FORMATS, dataset_settings, load_dataset
from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.sources import check_data_source

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.json"


@dataclasses.dataclass
class RunContext:
    """What stages share: the config, the work directory, the data and each stage's outputs.

    `dataset` is a `ShardDataset` (no sequences) with data.source "array_record".
    """

    config: ConfigDict
    workdir: epath.Path
    dataset: SeqRecDataset | ShardDataset
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Stage:
    """A pipeline stage: `run` does the work; `check` validates its config section cheaply."""

    run: Callable[[RunContext], None]
    check: Callable[[ConfigDict], None] = lambda config: None


STAGES: Registry[Stage] = Registry("pipeline stage")


def check_config(config: ConfigDict) -> None:
    """Fails fast, before any work, on unknown stage or registry names."""
    DATASET_FORMATS.get(config.data.format)
    check_data_source(config.data.source, config.data.shards_dir)
    if "eval" in config and config.eval.get("test_users", 0) < 0:
        raise ValueError(f"eval.test_users must be >= 0 (0 = every test user), got "
                         f"{config.eval.test_users}")
    for name in config.stages:
        STAGES.get(name).check(config)


def load_configured_dataset(config: ConfigDict) -> SeqRecDataset:
    """The whole dataset config.data describes, loaded (whatever config.data.source says)."""
    data = config.data
    return load_dataset(
        data.format, data.dir, name=data.name or None, bid_seed=data.bid_seed,
        min_seq_len=data.min_seq_len, **dict(data.options),
    )


def pipeline_dataset(config: ConfigDict) -> SeqRecDataset | ShardDataset:
    """The dataset the stages read: loaded ("memory") or the shards' `ShardDataset`
    ("array_record"), checked against config.data (max_history, the data settings)."""
    data = config.data
    if data.source == "array_record":
        return ShardDataset(data.shards_dir, max_history=data.max_history,
                            settings=dataset_settings(data))
    return load_configured_dataset(config)


def run_pipeline(config: ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs `config.stages` in `workdir` (a local path or a URI such as gs://bucket/run) and
    writes results.json; returns its content."""
    check_config(config)
    workdir = as_path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if is_primary_process():  # every process computes the same; one writes
        write_json(workdir / CONFIG_FILE, config.to_dict())

    start = time.perf_counter()
    dataset = pipeline_dataset(config)
    stats = dataset.stats()
    logging.info("dataset %s: %s", dataset.name, stats)
    # Taken before the stages run: the commit of the code that trains, not of whatever the
    # checkout holds when a long run ends.
    record = provenance(dataset.source_files, config)
    context = RunContext(config=config, workdir=workdir, dataset=dataset)
    for name in config.stages:
        logging.info("=== stage %s ===", name)
        stage_start = time.perf_counter()
        STAGES.get(name).run(context)
        logging.info("=== stage %s done in %.1fs ===", name, time.perf_counter() - stage_start)

    results = {
        **context.metrics,
        "dataset": {"name": dataset.name, **stats},
        "stages": list(config.stages),
        "wall_seconds": time.perf_counter() - start,
        "provenance": record,
    }
    if is_primary_process():
        write_json(workdir / RESULTS_FILE, results)
    logging.info("results written to %s", workdir / RESULTS_FILE)
    return results
