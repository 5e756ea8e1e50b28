r"""Runs an experiment: the stages its config lists (SIDs, then SFT, evaluation, RL as they land).

    python -m experiments.train --config=experiments/configs/quickstart.py --workdir=workdirs/qs \
        [--config.sid.levels=4 ...]

The work directory receives the resolved config (config.json), the stages' caches and
checkpoints, and results.json (final metrics by name plus provenance). Running the same command
again resumes from what is there. Bad input or a config typo prints one line and exits 1.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.train.pipeline import run_pipeline
from sgrec_jax.train.supervised import Preempted

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory for outputs and checkpoints.")
flags.mark_flags_as_required(["config", "workdir"])


class _QuietLibraries(std_logging.Filter):
    """Keeps library INFO chatter (Orbax logs every save step) out of the console log."""

    NOISY = ("/orbax/", "/grain/", "/jax/_src/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraries())
    try:
        results = run_pipeline(_CONFIG.value, _WORKDIR.value)
    except Preempted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(143)
    except (DataFormatError, UnknownNameError, ValueError) as e:
        logging.debug("traceback of the error below", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    metrics = {k: v for k, v in results.items() if isinstance(v, (int, float))}
    print("\n".join(f"{k:>32s}: {v:.6g}" for k, v in sorted(metrics.items())))


if __name__ == "__main__":
    app.run(main)
