"""What every command-line entry point shares: a readable console log and clean failures.

Bad input and config mistakes print one `error: ...` line and exit 1 (no traceback; it is logged
at debug verbosity); a preempted or paused training exits 143 after its checkpoint is saved.
"""

from __future__ import annotations

import logging as std_logging
import sys
from collections.abc import Callable
from typing import TypeVar

from absl import logging

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.train.supervised import Preempted

T = TypeVar("T")
PREEMPTED_EXIT_CODE = 143


class _QuietLibraries(std_logging.Filter):
    """Keeps library INFO chatter (Orbax logs every save step) out of the console log."""

    NOISY = ("/orbax/", "/grain/", "/jax/_src/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY
        )


def quiet_library_logs() -> None:
    logging.get_absl_handler().addFilter(_QuietLibraries())


def run_or_exit(fn: Callable[[], T]) -> T:
    """Runs fn(); known failures become one stderr line and an exit code."""
    try:
        return fn()
    except Preempted as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(PREEMPTED_EXIT_CODE)
    except (DataFormatError, UnknownNameError, ValueError) as e:
        logging.debug("traceback of the error below", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
