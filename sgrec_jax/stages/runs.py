"""Runs of the pipeline that resume across sessions: skip a finished run of the same config.

A run is finished when its directory holds results.json. Rerunning a sweep (seeds, schemes)
therefore resumes run by run, and a run stopped midway resumes from its checkpoints. A finished
run must come from the same config, or a table would mix two experiments; fields that steer a
run but not its results may change between sessions: RUN_CONTROL_FIELDS (matched by leaf name)
and RUN_CONTROL_SECTIONS (where the run executes, e.g. the multi-host coordinator, and sections
the pipeline never reads: `judge`, the settings of `python -m experiments.judge`).

Fields that say where files live rather than what they hold (LOCATION_FIELDS: the data folder,
the SFT workdir an RL run starts from, ...) are compared by their last path component: the same
run on a lent accelerator reads `data/amazon2014_beauty` where this machine reads
`/work/shared/data/amazon2014_beauty`, and an ablation's cells start from `<workdir>/sft_base`
wherever the workdir is. That the data are the same is checked on the contents: every results
file compares the runs' data-file hashes (evaluation/results_file.py, `merged_provenance`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from absl import logging
from ml_collections import ConfigDict

from sgrec_jax.core.files import read_json
from sgrec_jax.stages.pipeline import CONFIG_FILE, RESULTS_FILE, run_pipeline

RUN_CONTROL_FIELDS = ("max_steps_per_run", "log_every", "keep_checkpoints")
RUN_CONTROL_SECTIONS = ("distributed", "judge")
LOCATION_FIELDS = ("data.dir", "data.shards_dir", "sid.index_path", "rl.init_workdir",
                   "rl.rewards_workdir")


def _located(key: str, value: Any) -> Any:
    """A LOCATION_FIELDS value as compared: its last path component ("" stays "")."""
    if key in LOCATION_FIELDS and isinstance(value, str):
        return os.path.basename(os.path.normpath(value)) if value else value
    return value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def check_same_config(
    directory: str, config: ConfigDict, ignore_sections: Sequence[str] = (),
    defaults: ConfigDict | None = None,
) -> None:
    """Raises ValueError when `directory`'s stored config differs from `config`.

    Run-control fields and the top-level sections in ignore_sections (which the run does not
    read) may differ; LOCATION_FIELDS are compared by their last path component. With
    `defaults` (the experiment's config before any override), a field the stored config lacks
    passes when `config` holds it at its default: an option added after the run finished, whose
    default keeps the behaviour that run had.
    """
    stored = read_json(os.path.join(directory, CONFIG_FILE))
    if stored is None:
        raise ValueError(f"{directory} has {RESULTS_FILE} but no {CONFIG_FILE}")
    current = json.loads(json.dumps(config.to_dict()))  # Tuples become lists, as stored.
    old, new = _flatten(stored), _flatten(current)
    default = _flatten(json.loads(json.dumps(defaults.to_dict()))) if defaults else {}
    changed = sorted(
        k for k in old.keys() | new.keys()
        if _located(k, old.get(k)) != _located(k, new.get(k))
        and k.rsplit(".", 1)[-1] not in RUN_CONTROL_FIELDS
        and k.split(".", 1)[0] not in (*RUN_CONTROL_SECTIONS, *ignore_sections)
        and not (k not in old and k in default and default[k] == new.get(k))
    )
    if changed:
        raise ValueError(
            f"{directory} finished with another config (fields {', '.join(changed)} differ); "
            "pass the same config and overrides, or use another --workdir"
        )


def run_or_load(
    config: ConfigDict,
    directory: str,
    label: str,
    *,
    ignore_sections: Sequence[str] = (),
    run: Callable[[ConfigDict, str], dict[str, Any]] = run_pipeline,
    defaults: ConfigDict | None = None,
) -> dict[str, Any]:
    """`run(config, directory)` unless it already finished with this config; its results.

    label names the run in the log ("seed 0", "cell popo/seed_1"); defaults as in
    `check_same_config`.
    """
    finished = read_json(os.path.join(directory, RESULTS_FILE))
    if finished is None:
        logging.info("=== %s: running in %s ===", label, directory)
        return run(config, directory)
    check_same_config(directory, config, ignore_sections, defaults)
    logging.info("=== %s: finished, skipping (%s) ===", label, directory)
    return finished


def parse_seeds(values: Sequence[str]) -> list[int]:
    """--seeds: distinct integers >= 0."""
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--seeds must be integers, got {','.join(values)}") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds must be distinct integers >= 0, got {','.join(values)}")
    return seeds


def parse_sweep(values: Sequence[str]) -> list[float]:
    """--sweep: distinct fixed weights in [0, 1]."""
    try:
        weights = [float(v) for v in values if v]
    except ValueError:
        raise ValueError(f"--sweep must be numbers in [0, 1], got {','.join(values)}") from None
    if any(not 0.0 <= w <= 1.0 for w in weights) or len(set(weights)) != len(weights):
        raise ValueError(f"--sweep must be distinct numbers in [0, 1], got {','.join(values)}")
    return weights
