r"""Runs the PSJ judge (stage 1, aspect evidence) over a seeded sample of training requests.

    python -m experiments.judge --config=experiments/configs/scientific_sids.py --workdir=DIR \
        [--config.judge.sample_ratio=0.05 --config.judge.candidates=target,negatives:4]
    python -m experiments.judge --config=... --workdir=DIR --config.judge.backend=llm \
        --config.judge.base_url=http://127.0.0.1:8000/v1 \
        --config.judge.model=qwen2.5-7b-instruct [--config.judge.api_key_env=OPENAI_API_KEY \
        --config.judge.concurrency=8 --config.judge.max_requests=20000 --config.judge.dry_run]

The settings are the config's `judge` section (experiments/configs/common.py lists them with
their defaults; sgrec_jax/judge/run.py says how pairs are sampled and judged). Outputs in
DIR/judge/: config.json, cache.sqlite (rerun the same command to resume), evidence.npz and
run.json.
"""

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path
from sgrec_jax.judge.defaults import JUDGE_DIR
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.judge import run_judge_stage

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (outputs go to DIR/judge/).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    summary = run_or_exit(lambda: run_judge_stage(_CONFIG.value, _WORKDIR.value))
    for key, value in summary.items():
        print(f"{key:>24s}: {value}")
    print(f"{'evidence':>24s}: {as_path(_WORKDIR.value) / JUDGE_DIR}/evidence.npz")


if __name__ == "__main__":
    run_app(main)
