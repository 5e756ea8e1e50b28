"""A finished `experiments.train` run directory, read back by the tools that evaluate it after
the fact (experiments/fusion.py, experiments/evaluate_checkpoint.py,
experiments/valid_test_shift.py): its config, checked to hold a finished SFT (or rl) stage, and
the dataset it trained on, checked against the data files its results.json's provenance
recorded. Nothing here writes into the run directory."""

from __future__ import annotations

from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, read_json
from sgrec_jax.stages.pipeline import CONFIG_FILE, RESULTS_FILE, load_configured_dataset


def check_run_dir(workdir) -> ConfigDict:
    """The config of a finished SFT run in `workdir`; ValueError naming what is missing."""
    workdir = as_path(workdir)
    for name in (CONFIG_FILE, RESULTS_FILE, "sids.npz"):
        if not (workdir / name).exists():
            raise ValueError(f"--workdir {workdir} is not a finished SFT run: no {name}")
    results = read_json(workdir / RESULTS_FILE)
    if not isinstance(results, dict) or "sft/best_step" not in results:
        raise ValueError(f"--workdir {workdir}: {workdir / RESULTS_FILE} has no sft results "
                         "(the run has no finished sft stage)")
    if not (workdir / "sft" / "checkpoints").is_dir():
        raise ValueError(f"--workdir {workdir}: no SFT checkpoints in "
                         f"{workdir / 'sft' / 'checkpoints'}")
    return ConfigDict(read_json(workdir / CONFIG_FILE))


def check_rl_run_dir(cell) -> tuple[ConfigDict, dict]:
    """The config and results of a finished rl run in `cell` (e.g. an ablation cell), read by
    experiments/valid_test_shift.py; ValueError naming what is missing."""
    cell = as_path(cell)
    for name in (CONFIG_FILE, RESULTS_FILE):
        if not (cell / name).exists():
            raise ValueError(f"--cell {cell} is not a finished rl run: no {name}")
    results = read_json(cell / RESULTS_FILE)
    if "rl/last_step" not in results:
        raise ValueError(f"--cell {cell}: {cell / RESULTS_FILE} has no rl results")
    if not (cell / "rl" / "checkpoints").is_dir():
        raise ValueError(f"--cell {cell}: no rl checkpoints in {cell / 'rl' / 'checkpoints'}")
    return ConfigDict(read_json(cell / CONFIG_FILE)), results


def load_run_dataset(workdir, config: ConfigDict):
    """The dataset a finished run's config reads, refused if its files differ from the ones the
    run trained on (results.json's provenance)."""
    dataset = load_configured_dataset(config)
    recorded = (read_json(as_path(workdir) / RESULTS_FILE).get("provenance") or {}).get(
        "data_files_sha256")
    if recorded is not None and dict(recorded) != dict(dataset.source_files):
        raise ValueError(f"--workdir {workdir} was trained on other data files ({recorded}) than "
                         f"its config reads now ({dict(dataset.source_files)})")
    return dataset
