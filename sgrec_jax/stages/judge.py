"""PSJ stage 1 as a run: config.judge checked, the configured dataset loaded, then
`judge.run.judge_sample` (which writes DIR/judge/: config.json, cache.sqlite, evidence.npz,
run.json)."""

from __future__ import annotations

import os
from typing import Any

from ml_collections import ConfigDict

from sgrec_jax.judge.run import check_settings, judge_sample
from sgrec_jax.stages.pipeline import load_configured_dataset


def run_judge_stage(config: ConfigDict, workdir: str | os.PathLike) -> dict[str, Any]:
    """Judges the sample config.judge describes in `workdir`; returns run.json's content."""
    check_settings(config.judge)
    return judge_sample(config, load_configured_dataset(config), workdir)
