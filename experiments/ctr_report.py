r"""Trains (or loads) both pCTR models of a dataset and reports their AUC and calibration.

    python -m experiments.ctr_report --config=experiments/configs/NAME.py[:ARG] --workdir=DIR \
        [--options='{"ecpm": {"ctr_steps": 4000}, "ecpm_eval": {"d_model": 32}}']

"ecpm" is the pCTR model inside the eCPM reward, "ecpm_eval" the independent one that scores
eCPM@10 (another seed and architecture); see sgrec_jax/rewards/ctr_model.py. --options
overrides their defaults (`channel_options`). Both are cached under DIR/rewards/<name>_seed<k>/,
so a second run only reads them back. Prints and writes DIR/rewards/ctr_report.json: per model
the test AUC and ECE (test targets vs sampled negatives) and its calibration.
"""

from __future__ import annotations

import json
import os
from typing import Any

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import write_json
from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardSetup
from sgrec_jax.rewards.ctr_model import build_ctr_model
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import load_configured_dataset

CTR_CHANNELS = ("ecpm", "ecpm_eval")
REPORT_FILE = "ctr_report.json"

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (pCTR caches go in rewards/).")
_OPTIONS = flags.DEFINE_string("options", "{}", "JSON: channel -> pCTR option overrides.")
flags.mark_flags_as_required(["config", "workdir"])


def ctr_report(config, workdir: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Builds both pCTR models and writes workdir/rewards/ctr_report.json; returns its content."""
    unknown = sorted(set(overrides) - set(CTR_CHANNELS))
    if unknown:
        raise ValueError(f"--options names {unknown}; valid: {', '.join(CTR_CHANNELS)}")
    options = {name: REWARD_CHANNELS.resolve(name, overrides.get(name)) for name in CTR_CHANNELS}
    dataset = load_configured_dataset(config)
    setup = RewardSetup(config, dataset, workdir, seed=config.seed)
    report: dict[str, Any] = {"dataset": dataset.name, "bid_source": dataset.items.bid_source}
    for name in CTR_CHANNELS:
        model = build_ctr_model(setup, name, options[name])
        report[name] = {**model.report, "options": options[name]}
    write_json(os.path.join(setup.rewards_dir, REPORT_FILE), report)
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    overrides = json.loads(_OPTIONS.value)
    report = run_or_exit(lambda: ctr_report(_CONFIG.value, _WORKDIR.value, overrides))
    print(f"dataset {report['dataset']} ({report['bid_source']})")
    for name in CTR_CHANNELS:
        r = report[name]
        print(f"{name:>10s} ({r['architecture']}, seed {r['seed']}): test AUC {r['test_auc']:.4f}"
              f"  ECE {r['test_ece']:.4f} (uncalibrated {r['test_ece_uncalibrated']:.4f})"
              f"  best step {r['best_step']}/{r['last_step']}")


if __name__ == "__main__":
    run_app(main)
