r"""Speed figures of this machine and of the generator, measured in one run (not a test).

    python -m experiments.benchmark --config=experiments/configs/benchmark.py[:quick] \
        [--config.sections=matmul,sft,beam --config.d_ff=1024 ...] [--out=bench.json]

The sizes are the config's fields (experiments/configs/benchmark.py; `:quick` gives tiny ones);
sgrec_jax/benchmarks/ says what each section measures. Prints one table per section as it
finishes; --out also writes the figures as JSON, the resolved config under "sizes".
"""

from absl import app, flags
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.benchmarks.run import run_benchmark
from sgrec_jax.core.files import write_json
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiments/configs/benchmark.py[:quick] (quick = tiny sizes).",
    lock_config=True,
)
_OUT = flags.DEFINE_string("out", None, "Also write the figures to this JSON file.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    figures = run_or_exit(lambda: run_benchmark(_CONFIG.value))
    if _OUT.value:
        write_json(_OUT.value, figures)


if __name__ == "__main__":
    run_app(main)
