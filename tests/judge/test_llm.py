"""The LLM backend against a real local HTTP server: answers, garbage, timeouts, 500s, a budget,
an endpoint failing midway, resumption without re-asking, the API key kept secret, and
connections kept alive between requests and closed with the client; structured output (the
answer schema sent as response_format), the schema-failure count, resampling after a malformed
answer, a server dying mid-run and a wall-time budget."""

import collections
import http.server
import json
import logging
import re
import socket
import threading
import time

import pytest

from sgrec_jax.judge.cache import FAILED, OK, JudgeCache
from sgrec_jax.judge.llm import (
    ChatClient,
    Endpoint,
    EndpointError,
    EndpointUnreachable,
    JudgeJob,
    RetryPolicy,
    run_judge,
)
from sgrec_jax.judge.prompt import ANSWER_SCHEMA, PROMPT_VERSION, build_messages
from sgrec_jax.judge.store import EvidenceStore

KEY_ENV = "SGREC_TEST_JUDGE_KEY"
SECRET = "sk-test-7f3a9c1e-never-store-me"
MODEL = "tiny-judge"
RETRY = RetryPolicy(max_attempts=3, backoff_s=0.005, backoff_max_s=0.02, seed=0)
ANSWER = {"profile": 0.75, "future": 0.5, "novelty": 0.25, "rationale": "plausible"}


class JudgeServer(http.server.ThreadingHTTPServer):
    """A chat-completions endpoint whose answer depends on the candidate's kind (its text):
    ok, fenced (```json), garbage, slow (past the timeout), flaky (one 500, then ok), echo (500
    quoting the Authorization header), leaky (a valid answer quoting the header), outofrange (a
    score of 1.5), truncated (JSON cut short, as at max_tokens), die (with `die_on_kind`: the
    server closes its socket and drops the connection unanswered). With `fail_after` set, every
    request after that many gets 401; `delay_s` delays every answer. Request bodies are kept in
    `bodies`. It speaks HTTP/1.1 (keep-alive, as
    vLLM and hosted APIs do) and counts the connections clients open and still hold."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.requests = collections.Counter()  # (user, item) -> requests received
        self.answers = collections.Counter()  # (user, item) -> valid answers sent
        self.auth_headers: set[str] = set()
        self.fail_after: int | None = None
        self.die_on_kind: str | None = None
        self.delay_s = 0.0
        self.bodies: list[dict] = []
        self.connections: set[tuple[str, int]] = set()  # client (host, port) ever connected
        self.open_connections = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _Handler(http.server.BaseHTTPRequestHandler):
    """One instance per connection; it serves requests until the client closes it."""

    server: JudgeServer
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.connections.add(self.client_address)
            self.server.open_connections += 1

    def finish(self):
        with self.server.lock:
            self.server.open_connections -= 1
        super().finish()

    def log_message(self, *args):  # Keep the test output clean.
        pass

    def _send(self, status: int, body: dict | str) -> None:
        data = (json.dumps(body) if isinstance(body, dict) else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert self.path == "/v1/chat/completions" and request["model"] == MODEL
        content = request["messages"][-1]["content"]
        user = int(re.search(r"user (\d+)'s item", content).group(1))
        item, kind = re.search(r"item (\d+) kind (\w+)", content).groups()
        key, auth = (user, int(item)), self.headers.get("Authorization", "")
        if self.server.die_on_kind == kind:
            self.server.socket.shutdown(socket.SHUT_RDWR)  # stop listening: connections
            self.server.socket.close()  # are refused from now on
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            self.close_connection = True
            return  # and this one closes without an answer
        with self.server.lock:
            self.server.bodies.append(request)
            self.server.auth_headers.add(auth)
            self.server.requests[key] += 1
            total = sum(self.server.requests.values())
            n = self.server.requests[key]
            fatal = self.server.fail_after is not None and total > self.server.fail_after
        answer = json.dumps(ANSWER)
        try:
            if fatal:
                return self._send(401, {"error": "invalid api key"})
            time.sleep(self.server.delay_s)
            if kind == "slow":
                time.sleep(0.5)
            elif kind == "outofrange":
                answer = json.dumps({**ANSWER, "profile": 1.5})
            elif kind == "truncated":
                answer = answer[:30]
            elif kind == "garbage":
                answer = "The candidate looks great to me!"
            elif kind == "flaky" and n == 1:
                return self._send(500, {"error": "overloaded"})
            elif kind == "echo":
                return self._send(500, {"error": f"bad request, headers: {auth}"})
            elif kind == "fenced":
                answer = f"```json\n{answer}\n```"
            elif kind == "leaky":
                answer = json.dumps({**ANSWER, "rationale": f"you sent {auth}"})
            if kind not in ("garbage", "outofrange", "truncated"):
                with self.server.lock:
                    self.server.answers[key] += 1
            self._send(200, {"choices": [{"message": {"role": "assistant", "content": answer}}],
                             "usage": {"prompt_tokens": 100, "completion_tokens": 20}})
        except (BrokenPipeError, ConnectionResetError):  # The client gave up (timeout).
            pass


@pytest.fixture
def server():
    srv = JudgeServer()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def jobs(kinds: dict[tuple[int, int], str]) -> list[JudgeJob]:
    return [
        JudgeJob(user=u, item=i, context=(u,),
                 messages=tuple(build_messages([f"user {u}'s item"], f"item {i} kind {kind}")))
        for (u, i), kind in kinds.items()
    ]


def client(server: JudgeServer) -> ChatClient:
    return ChatClient(Endpoint(server.url, MODEL, api_key_env=KEY_ENV, timeout_s=0.2))


def open_cache(tmp_path) -> JudgeCache:
    return JudgeCache(tmp_path / "cache.sqlite", fingerprint="tiny")


KINDS = {(0, 1): "ok", (0, 2): "fenced", (1, 1): "garbage", (1, 3): "slow", (2, 1): "flaky",
         (2, 2): "echo", (3, 4): "leaky"}


def test_outcomes_are_cached_and_never_asked_again(server, key, tmp_path):
    with open_cache(tmp_path) as cache:
        summary = run_judge(cache, client(server), jobs(KINDS) + jobs({(0, 1): "ok"}), RETRY,
                            concurrency=3)
        status = cache.statuses(MODEL, PROMPT_VERSION)
        failures = {(r.user, r.item): r for r in cache.records(MODEL, PROMPT_VERSION, FAILED)}
    assert summary.pairs == len(KINDS) and summary.cached == 0  # the duplicate job is merged
    assert {k for k, s in status.items() if s == OK} == {(0, 1), (0, 2), (2, 1), (3, 4)}
    assert set(failures) == {(1, 1), (1, 3), (2, 2)}
    assert "not one JSON object" in failures[(1, 1)].error and failures[(1, 1)].attempts == 3
    assert "timeout" in failures[(1, 3)].error
    assert "HTTP 500" in failures[(2, 2)].error
    assert server.requests[(1, 1)] == 3 and server.requests[(2, 1)] == 2
    assert server.requests[(0, 1)] == 1
    assert summary.answered == 4 and summary.failed == 3 and summary.unfinished == 0
    assert summary.http_requests == sum(server.requests.values())

    before = dict(server.requests)
    with open_cache(tmp_path) as cache:
        again = run_judge(cache, client(server), jobs(KINDS), RETRY, concurrency=3)
        assert again.cached == len(KINDS) and again.http_requests == 0
        assert dict(server.requests) == before
        retried = run_judge(cache, client(server), jobs(KINDS), RETRY, concurrency=3,
                            retry_failed=True)
    asked_again = {k for k in KINDS if server.requests[k] > before[k]}
    assert asked_again == {(1, 1), (1, 3), (2, 2)} and retried.cached == 4


def test_budget_stops_cleanly_and_resume_asks_each_pair_once(server, key, tmp_path):
    kinds = {(u, i): "ok" for u in range(4) for i in range(3)}
    with open_cache(tmp_path) as cache:
        first = run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=2,
                          max_requests=5)
        assert first.budget_exhausted and first.http_requests == 5
        assert first.answered == 5 and first.unfinished == len(kinds) - 5
        assert cache.counts(MODEL, PROMPT_VERSION) == {OK: 5, FAILED: 0}
        second = run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=2)
        assert second.cached == 5 and second.answered == len(kinds) - 5
        store = EvidenceStore.from_cache(cache, MODEL, PROMPT_VERSION)
    assert set(server.answers) == set(kinds) and set(server.answers.values()) == {1}
    assert len(store) == len(kinds)


def test_endpoint_failing_midway_keeps_answers_and_resumes(server, key, tmp_path):
    kinds = {(u, i): "ok" for u in range(5) for i in range(4)}
    server.fail_after = 7
    with open_cache(tmp_path) as cache:
        with pytest.raises(EndpointError, match="HTTP 401"):
            run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=3)
        kept = cache.counts(MODEL, PROMPT_VERSION)
    assert kept == {OK: sum(server.answers.values()), FAILED: 0} and kept[OK] >= 5
    server.fail_after = None
    with open_cache(tmp_path) as cache:
        resumed = run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=3)
        assert cache.counts(MODEL, PROMPT_VERSION) == {OK: len(kinds), FAILED: 0}
    assert resumed.cached == kept[OK]
    assert set(server.answers) == set(kinds) and set(server.answers.values()) == {1}


def test_api_key_is_sent_but_never_stored_or_logged(server, key, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with open_cache(tmp_path) as cache:
        run_judge(cache, client(server), jobs({(2, 2): "echo", (3, 4): "leaky"}), RETRY)
        (echo,) = cache.records(MODEL, PROMPT_VERSION, FAILED)
        (leaky,) = cache.records(MODEL, PROMPT_VERSION, OK)
    assert server.auth_headers == {f"Bearer {SECRET}"}
    assert "[api key]" in echo.error and "[api key]" in leaky.rationale
    for path in tmp_path.iterdir():  # the database, its WAL and shared-memory files
        assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in caplog.text
    assert SECRET not in repr(client(server))


def test_no_key_sends_no_authorization(server, monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV, raising=False)
    with open_cache(tmp_path) as cache:
        run_judge(cache, client(server), jobs({(0, 1): "ok"}), RETRY)
    assert server.auth_headers == {""}


def test_connections_are_reused_and_closed_with_the_client(server, key, tmp_path):
    kinds = {(u, i): "ok" for u in range(4) for i in range(3)}
    with open_cache(tmp_path) as cache, client(server) as chat:
        serial = run_judge(cache, chat, jobs(kinds), RETRY, concurrency=1)
        assert serial.answered == len(kinds) and serial.http_requests == len(kinds)
        assert len(server.connections) == 1  # 12 requests, one connection

        more = {(u, i): "ok" for u in range(10, 14) for i in range(6)}
        parallel = run_judge(cache, chat, jobs(more), RETRY, concurrency=3)
        assert parallel.answered == len(more)
        assert len(server.connections) <= 1 + 3  # at most one per worker thread, not 24
        assert server.open_connections >= 1
    deadline = time.monotonic() + 5
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.open_connections == 0


def test_structured_output_sends_the_answer_schema(server, key, tmp_path):
    with open_cache(tmp_path) as cache:
        run_judge(cache, client(server), jobs({(0, 1): "ok"}), RETRY)
        (body,) = server.bodies
        assert body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "psj_aspect_scores", "schema": ANSWER_SCHEMA, "strict": True},
        }
        assert body["response_format"]["json_schema"]["schema"]["required"] == [
            "profile", "future", "novelty", "rationale"]
        for fmt, expected in (
                ("json_object_schema", {"type": "json_object", "schema": ANSWER_SCHEMA}),
                ("json_object", {"type": "json_object"}), ("none", None)):
            endpoint = Endpoint(server.url, MODEL, api_key_env=KEY_ENV, response_format=fmt)
            run_judge(cache, ChatClient(endpoint), jobs({(0, len(server.bodies) + 5): "ok"}),
                      RETRY)
            assert server.bodies[-1].get("response_format") == expected
    with pytest.raises(ValueError, match="response_format must be one of"):
        Endpoint(server.url, MODEL, response_format="grammar")


def test_schema_failures_are_counted_and_retried_with_sampling(server, key, tmp_path,
                                                              monkeypatch):
    kinds = {(0, 1): "ok", (1, 1): "garbage", (1, 2): "outofrange", (1, 3): "truncated"}
    slow_backoff = RetryPolicy(max_attempts=3, backoff_s=5.0, backoff_max_s=5.0, seed=0)
    backoffs = []  # every backoff a retry would sit out (RetryPolicy.delay), recorded
    delay = RetryPolicy.delay
    monkeypatch.setattr(RetryPolicy, "delay",
                        lambda self, retry, rng: backoffs.append(retry) or delay(self, retry, rng))
    with open_cache(tmp_path) as cache:
        summary = run_judge(cache, client(server), jobs(kinds), slow_backoff, concurrency=2)
        failures = {(r.user, r.item): r.error
                    for r in cache.records(MODEL, PROMPT_VERSION, FAILED)}
    assert summary.answered == 1 and summary.failed == 3
    assert backoffs == []  # a malformed answer is retried at once, without backoff
    assert summary.http_requests == 1 + 3 * RETRY.max_attempts
    assert summary.malformed_answers == 3 * RETRY.max_attempts
    assert summary.schema_failure_rate == pytest.approx(9 / 10)
    assert "outside [0, 1]" in failures[(1, 2)]
    assert "not one JSON object" in failures[(1, 1)] and "not one JSON object" in failures[(1, 3)]
    # The first try is greedy; a retry after a malformed answer samples (not the same answer).
    by_pair = collections.defaultdict(list)
    for body in server.bodies:
        by_pair[body["messages"][-1]["content"][-20:]].append(body["temperature"])
    assert sorted(map(tuple, by_pair.values())) == sorted(
        [(0.0,)] + [(0.0, 0.7, 0.7)] * 3)


def test_server_dying_mid_run_stops_with_a_clear_error_and_resumes(server, key, tmp_path):
    kinds = {(0, i): "ok" for i in range(3)} | {(1, 0): "die"} | {(2, i): "ok" for i in range(3)}
    server.die_on_kind = "die"
    with open_cache(tmp_path) as cache:
        with pytest.raises(EndpointUnreachable, match=r"no connection in 3 attempts.*rerun"):
            run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=1)
        # What was answered is kept; nothing is stored as failed, so a rerun asks the rest.
        assert cache.counts(MODEL, PROMPT_VERSION) == {OK: 3, FAILED: 0}
    revived = JudgeServer()
    threading.Thread(target=revived.serve_forever, daemon=True).start()
    try:
        with open_cache(tmp_path) as cache:
            resumed = run_judge(cache, client(revived), jobs(kinds), RETRY, concurrency=1)
            assert cache.counts(MODEL, PROMPT_VERSION) == {OK: len(kinds), FAILED: 0}
    finally:
        revived.shutdown()
        revived.server_close()
    assert resumed.cached == 3 and resumed.answered == 4
    assert set(revived.requests) == set(kinds) - {(0, 0), (0, 1), (0, 2)}


def test_time_budget_stops_the_run_and_a_rerun_finishes(server, key, tmp_path):
    kinds = {(u, i): "ok" for u in range(3) for i in range(4)}
    server.delay_s = 0.05
    with open_cache(tmp_path) as cache:
        first = run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=1,
                          max_seconds=0.2)
        assert first.budget_exhausted and 1 <= first.answered < len(kinds)
        assert first.unfinished == len(kinds) - first.answered and first.failed == 0
        second = run_judge(cache, client(server), jobs(kinds), RETRY, concurrency=2)
    assert second.cached == first.answered and second.answered == len(kinds) - first.answered
    assert set(server.answers.values()) == {1}
