r"""The device check (sgrec_jax/benchmarks/device_check.py): whether this code works on this
machine's accelerator and how fast, as one JSON file. `bash experiments/device_check.sh
--platform=gpu|tpu|cpu` sets up the environment and runs this:

    python -m experiments.device_check --config=experiments/configs/device_check.py:gpu \
        [--config.parts=peak,sft ...] [--out=FILE.json] [--reference_out=FILE.json]

--out defaults to $OUT/device_check.json when $OUT is set, else workdirs/device_check.json.
Prints a summary at the end and exits 0 only when every check passed and no part failed.
--reference_out also writes the quickstart part's config and metrics as the reference that later
runs are compared with (make it on a CPU: docs/results/device_check_quickstart_cpu.json).
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything the quickstart names)
from sgrec_jax.benchmarks.device_check import reference_of, run_device_check, summary
from sgrec_jax.core.files import write_json
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiments/configs/device_check.py:gpu|tpu|cpu|quick", lock_config=True)
_OUT = flags.DEFINE_string(
    "out", None, "The JSON file (default: $OUT/device_check.json when $OUT is set, else "
    "workdirs/device_check.json).")
_REFERENCE_OUT = flags.DEFINE_string(
    "reference_out", None, "Also write the quickstart part's config and metrics here, as the "
    "reference later checks compare with.")
flags.mark_flags_as_required(["config"])


def default_out() -> str:
    out_dir = os.environ.get("OUT")
    return os.path.join(out_dir, "device_check.json") if out_dir else os.path.join(
        "workdirs", "device_check.json")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    out = _OUT.value or default_out()
    figures = run_or_exit(lambda: run_device_check(_CONFIG.value, out, log=logging.info))
    print(summary(figures))
    print(f"written to {out}")
    if _REFERENCE_OUT.value:
        if "quickstart" not in figures:
            raise app.UsageError("--reference_out needs the quickstart part to have run")
        write_json(_REFERENCE_OUT.value, reference_of(figures))
    sys.exit(0 if figures["ok"] else 1)


if __name__ == "__main__":
    run_app(main)
