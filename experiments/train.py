r"""Runs an experiment: the stages its config lists (SIDs, SFT, SASRec; RL as it lands).

    python -m experiments.train --config=experiments/configs/quickstart.py --workdir=workdirs/qs \
        [--config.sid.levels=4 ...]

The work directory receives the resolved config (config.json), the stages' caches and
checkpoints, and results.json (final metrics by name plus provenance). Running the same command
again resumes from what is there. Bad input or a config typo prints one line and exits 1; a
preempted (SIGTERM) or paused run saves a checkpoint and exits 143.

Multi-host (TPU pod, several GPU nodes): run the same command on every host with
`--config.distributed.enabled=True` (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and
JAX_PROCESS_ID in the environment); see sgrec_jax/core/distributed.py.
"""

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.distributed import initialize_distributed
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import run_pipeline

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    config = _CONFIG.value

    def run():
        initialize_distributed(config.distributed)  # before anything touches a JAX backend
        return run_pipeline(config, _WORKDIR.value)

    results = run_or_exit(run)
    metrics = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    print("\n".join(f"{k:>32s}: {v:.6g}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    run_app(main)
