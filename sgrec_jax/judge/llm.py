"""The LLM backend: an OpenAI-compatible chat endpoint, called with retries and a budget.

    with ChatClient(Endpoint(base_url="http://127.0.0.1:8000/v1", model="qwen2.5-7b")) as client:
        summary = run_judge(cache, client, jobs, RetryPolicy(), concurrency=8, max_requests=10_000)

Any server speaking POST {base_url}/chat/completions works (vLLM, SGLang, llama.cpp, Ollama, a
hosted API). The API key is read once from the environment variable Endpoint.api_key_env
(default OPENAI_API_KEY) and sent as a Bearer token; it is never logged, stored in the cache or
put in an error message (errors are scrubbed of it, since a server may echo headers). Local
servers need no key: when the variable is unset no Authorization header is sent.

Structured output: by default each request carries the answer's JSON Schema as the OpenAI
`response_format` {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}
(prompt.ANSWER_SCHEMA), which llama.cpp's server, vLLM and SGLang turn into constrained
decoding, so a small or chatty model cannot wander off the format. llama-cpp-python's server
(judge.server) takes the schema in another shape, {"type": "json_object", "schema": ...}
(Endpoint.response_format="json_object_schema"; it answers "json_schema" with HTTP 500).
"json_object" asks for JSON mode without a schema and "none" sends no response_format, for
servers that reject both.
Every answer is still validated strictly (prompt.parse_answer); the run counts the answers that
fail it (JudgeRunSummary.malformed_answers, schema_failure_rate).

A ChatClient holds one httpx.Client: its connection pool keeps connections open between requests
(keep-alive), so a run opens about `concurrency` connections instead of one per request. Close it
(`with ChatClient(...) as client:` or client.close()) when the run is over.

run_judge is resumable and never asks twice for a pair already in the cache: pairs stored as
answered are skipped, and so are stored failures unless retry_failed. Each pair's requests run in a
worker thread (at most `concurrency` at once); the main thread commits each outcome to the cache as
it arrives. Transient failures (timeouts, connection errors, HTTP 429 and 5xx) and malformed answers
are retried, the transient failures with exponential backoff and seeded jitter, a malformed answer
at once (the server is not overloaded); when a pair's attempts run out it is stored as failed. A
retry after a malformed answer samples at RetryPolicy.malformed_temperature (if above the
endpoint's), since a greedy server would repeat the same bad answer word for word. A server
that cannot be reached at all through a pair's attempts (connection refused, reset or dropped
unanswered: it is down, not slow) stops the run with EndpointUnreachable and the pair is left
unstored, so a rerun asks it again once the server is back. A 4xx answer other than 429 fails
the pair at once, except 401/403/404, which would fail every pair the same way and stop the run
(EndpointError). The request budget counts HTTP requests, retries included, and `max_seconds`
bounds the run's wall time the same way: once either is spent no request starts, the pairs in
flight finish, and the run returns with everything answered so far in the cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import httpx
from absl import logging

from sgrec_jax.judge.cache import FAILED, OK, JudgeCache, Record
from sgrec_jax.judge.prompt import (
    ANSWER_SCHEMA,
    ANSWER_SCHEMA_NAME,
    PROMPT_VERSION,
    Judgement,
    MalformedAnswer,
    parse_answer,
)

MAX_RESPONSE_BYTES = 1 << 20  # An answer is a few hundred bytes; a larger body is refused.
_FATAL_STATUS = (401, 403, 404)
_ERROR_DETAIL_BYTES = 500  # Of an error body, the start is enough to say what went wrong.
RESPONSE_FORMATS = ("json_schema", "json_object_schema", "json_object", "none")


class EndpointError(ValueError):
    """The endpoint refuses every request (bad key, wrong URL or model): the run stops."""


class EndpointUnreachable(EndpointError):
    """No connection to the endpoint through a pair's attempts (server down): the run stops."""


class _Transient(Exception):
    """A failure worth retrying; `retry_after_s` is the server's hint, if any; `unreachable`:
    no connection could be made or kept (as opposed to a slow or overloaded server)."""

    def __init__(self, message: str, retry_after_s: float | None = None,
                 unreachable: bool = False):
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.unreachable = unreachable


class _Rejected(Exception):
    """The server rejected this request (a 4xx other than 429): retrying will not help."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where and how to ask.

    Attributes:
      base_url: e.g. "http://127.0.0.1:8000/v1"; requests go to {base_url}/chat/completions.
      model: the served model's name (also part of the cache key).
      api_key_env: NAME of the environment variable holding the API key (the key itself is
        never passed around in configs or flags).
      timeout_s: per-request timeout: of each read (waiting for the answer), each write and
        the wait for a free connection.
      connect_timeout_s: timeout of opening a connection (None: timeout_s); a server that is
        down or unreachable fails fast while a slow answer may still take timeout_s.
      max_tokens, temperature: sampling settings of the answer.
      response_format: "json_schema" (default): structured output, the answer's JSON Schema
        as OpenAI's response_format; "json_object_schema": the schema in llama-cpp-python's
        shape {"type": "json_object", "schema": ...}; "json_object": JSON mode without a
        schema; "none": no response_format (servers that reject it).
    """

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float = 60.0
    connect_timeout_s: float | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    response_format: str = "json_schema"

    def __post_init__(self):
        if self.response_format not in RESPONSE_FORMATS:
            raise ValueError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                             f"got {self.response_format!r}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        if not self.model:
            raise ValueError("the judge's model name is empty")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.connect_timeout_s is not None and self.connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {self.connect_timeout_s}")

    @property
    def timeout(self) -> httpx.Timeout:
        connect = self.timeout_s if self.connect_timeout_s is None else self.connect_timeout_s
        return httpx.Timeout(self.timeout_s, connect=connect)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """attempts per pair; delay before retry k (0-based) = min(max, base * 2^k) * U[0.5, 1.5),
    the jitter drawn from a generator seeded by (seed, user, item); a retry after a malformed
    answer samples at malformed_temperature (None: the endpoint's temperature) when higher."""

    max_attempts: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    seed: int = 0
    malformed_temperature: float | None = 0.7

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")

    def delay(self, retry: int, rng: random.Random) -> float:
        return min(self.backoff_max_s, self.backoff_s * 2**retry) * (0.5 + rng.random())


@dataclasses.dataclass(frozen=True)
class Reply:
    content: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float


class ChatClient:
    """Sends chat completion requests over one pooled httpx.Client.

    Thread-safe: run_judge's worker threads share it, and httpx.Client's connection pool hands
    each concurrent request its own connection (the pool grows to the number of threads; idle
    connections are kept and reused). Use as a context manager or call close().
    """

    def __init__(self, endpoint: Endpoint):
        self.endpoint = endpoint
        self.url = endpoint.base_url.rstrip("/") + "/chat/completions"
        self._api_key = os.environ.get(endpoint.api_key_env) or None
        if self._api_key is None:
            logging.info("$%s is not set: sending no API key", endpoint.api_key_env)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        # No cap on the pool: run_judge's `concurrency` bounds the requests in flight, and a cap
        # below it would make threads wait for a connection or close idle ones (no reuse).
        self._http = httpx.Client(
            headers=headers,
            timeout=endpoint.timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=None),
        )

    def __repr__(self) -> str:
        return f"ChatClient({self.url!r}, model={self.endpoint.model!r})"

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Closes the pooled connections; the client cannot send afterwards."""
        self._http.close()

    def scrub(self, text: str) -> str:
        """text with the API key removed (error bodies may echo request headers)."""
        return text.replace(self._api_key, "[api key]") if self._api_key else text

    def complete(self, messages: Sequence[dict[str, str]], temperature: float | None = None
                 ) -> Reply:
        """The answer's text; raises _Transient, _Rejected, MalformedAnswer or EndpointError.

        temperature: this request's sampling temperature (None: the endpoint's)."""
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": list(messages),
            "max_tokens": self.endpoint.max_tokens,
            "temperature": self.endpoint.temperature if temperature is None else temperature,
        }
        if self.endpoint.response_format == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": ANSWER_SCHEMA_NAME, "schema": ANSWER_SCHEMA,
                                "strict": True},
            }
        elif self.endpoint.response_format == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": ANSWER_SCHEMA}
        elif self.endpoint.response_format == "json_object":
            body["response_format"] = {"type": "json_object"}
        start = time.perf_counter()
        try:
            with self._http.stream("POST", self.url, content=json.dumps(body).encode()) as response:
                if response.is_success:
                    raw = _read_at_most(response, MAX_RESPONSE_BYTES + 1)
                else:
                    detail = _read_at_most(response, _ERROR_DETAIL_BYTES)
                    self._raise_for(response, detail.decode("utf-8", "replace"))
        except httpx.ConnectTimeout:
            raise _Transient(f"connect timeout after {self.endpoint.timeout.connect:g}s") from None
        except httpx.TimeoutException:
            raise _Transient(f"timeout after {self.endpoint.timeout_s:g}s") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError) as e:
            # Refused, reset or closed without an answer: nobody is serving (any more).
            raise _Transient(self.scrub(f"connection failed: {e}"), unreachable=True) from None
        except (httpx.TransportError, OSError) as e:
            raise _Transient(self.scrub(f"connection failed: {e}")) from None
        except httpx.DecodingError:
            raise MalformedAnswer("response body could not be decoded") from None
        latency = time.perf_counter() - start
        if len(raw) > MAX_RESPONSE_BYTES:
            raise MalformedAnswer(f"response larger than {MAX_RESPONSE_BYTES} bytes")
        return _reply(raw, latency)

    def _raise_for(self, response: httpx.Response, detail: str) -> NoReturn:
        """Raises what an unsuccessful answer means: fatal, transient or rejected."""
        status = response.status_code
        message = f"HTTP {status}: {self.scrub(detail).strip()[:200]}"
        if status in _FATAL_STATUS:
            raise EndpointError(f"{self.url}: {message}")
        if status == 429 or status >= 500:
            raise _Transient(message, _retry_after(response.headers.get("Retry-After")))
        raise _Rejected(message)


def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """The body's first `limit` bytes (or all of it if shorter), without reading the rest."""
    chunks, size = [], 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _reply(raw: bytes, latency: float) -> Reply:
    try:
        envelope = json.loads(raw)
        content = envelope["choices"][0]["message"]["content"]
        usage = envelope.get("usage") or {}
        prompt_tokens = int(usage.get("prompt_tokens") or 0)
        completion_tokens = int(usage.get("completion_tokens") or 0)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedAnswer(f"not a chat completion response ({type(e).__name__})") from None
    if not isinstance(content, str):
        raise MalformedAnswer("chat completion without text content")
    return Reply(content, prompt_tokens, completion_tokens, latency)


class RequestBudget:
    """A thread-safe count of HTTP requests left (None = unlimited) and an optional deadline
    (seconds from now, None = none) after which no request starts."""

    def __init__(self, max_requests: int | None, max_seconds: float | None = None):
        if max_requests is not None and max_requests < 0:
            raise ValueError(f"max_requests must be >= 0, got {max_requests}")
        if max_seconds is not None and max_seconds <= 0:
            raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
        self._left = max_requests
        self._deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._used = 0
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            if self.exhausted:
                return False
            self._used += 1
            return True

    @property
    def used(self) -> int:
        return self._used

    @property
    def exhausted(self) -> bool:
        return ((self._left is not None and self._used >= self._left)
                or (self._deadline is not None and time.monotonic() >= self._deadline))


@dataclasses.dataclass(frozen=True)
class JudgeJob:
    """One (user, item) pair to judge and the prompt that asks for it."""

    user: int
    item: int
    messages: tuple[dict[str, str], ...]
    context: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Outcome:
    record: Record | None  # None: the budget ran out before a verdict (nothing to store)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    malformed: int = 0  # answers that failed validation


def judge_pair(
    client: ChatClient,
    job: JudgeJob,
    retry: RetryPolicy,
    budget: RequestBudget,
    stop: threading.Event,
) -> _Outcome:
    """Asks for one pair until it is answered, fails for good, or the budget/stop ends it."""
    rng = random.Random(f"{retry.seed}:{job.user}:{job.item}")
    start = time.perf_counter()
    error, attempts = "", 0
    prompt_tokens = completion_tokens = malformed = 0
    unreachable = True  # every attempt so far failed to reach the server
    temperature = None
    while attempts < retry.max_attempts:
        if stop.is_set() or not budget.take():
            return _Outcome(None, prompt_tokens, completion_tokens, malformed)
        attempts += 1
        hint, backoff = None, True
        try:
            reply = client.complete(job.messages, temperature)
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens
            judgement: Judgement = parse_answer(reply.content)
            record = Record(
                user=job.user, item=job.item, scores=judgement.scores,
                rationale=client.scrub(judgement.rationale), attempts=attempts,
                latency_s=reply.latency_s, context=job.context,
            )
            return _Outcome(record, prompt_tokens, completion_tokens, malformed)
        except _Rejected as e:
            error, unreachable = str(e), False
            break
        except _Transient as e:
            error, hint = str(e), e.retry_after_s
            unreachable &= e.unreachable
        except MalformedAnswer as e:
            error, unreachable = client.scrub(str(e)), False
            malformed += 1
            backoff = False  # the server answered: nothing to back off from
            if retry.malformed_temperature is not None:
                temperature = max(client.endpoint.temperature, retry.malformed_temperature)
        if attempts < retry.max_attempts and backoff:
            delay = retry.delay(attempts - 1, rng)
            if hint is not None:
                delay = max(delay, min(hint, retry.backoff_max_s))
            if stop.wait(delay):  # A stopped run does not sit out its backoff.
                return _Outcome(None, prompt_tokens, completion_tokens, malformed)
    if unreachable:
        raise EndpointUnreachable(
            f"{client.url}: no connection in {attempts} attempts ({error}); is the server "
            "running? Answers so far are cached: rerun once it is back")
    record = Record(
        user=job.user, item=job.item, scores=None, error=error, attempts=attempts,
        latency_s=time.perf_counter() - start, context=job.context,
    )
    return _Outcome(record, prompt_tokens, completion_tokens, malformed)


@dataclasses.dataclass(frozen=True)
class JudgeRunSummary:
    """What one run_judge call did.

    Attributes:
      pairs: distinct pairs asked for; cached: of those, skipped as already in the cache.
      answered, failed: pairs stored by this run as judged / not judged.
      unfinished: pairs left for a later run (budget spent or run stopped).
      http_requests: requests sent (retries included).
      malformed_answers: answers that failed validation (prompt.parse_answer), retried ones
        included; schema_failure_rate = malformed_answers / http_requests.
      prompt_tokens, completion_tokens: as the server reported them (0 if it does not).
      seconds: wall time; budget_exhausted: whether the request or time budget stopped the run.
    """

    pairs: int
    cached: int
    answered: int
    failed: int
    unfinished: int
    http_requests: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    budget_exhausted: bool
    malformed_answers: int = 0

    @property
    def schema_failure_rate(self) -> float | None:
        """Answers that failed validation per HTTP request (None when nothing was sent)."""
        return self.malformed_answers / self.http_requests if self.http_requests else None


def run_judge(
    cache: JudgeCache,
    client: ChatClient,
    jobs: Sequence[JudgeJob],
    retry: RetryPolicy,
    *,
    concurrency: int = 8,
    max_requests: int | None = None,
    max_seconds: float | None = None,
    retry_failed: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> JudgeRunSummary:
    """Judges every job's pair not yet in the cache (see module docstring); returns a summary.

    max_requests / max_seconds: the HTTP request and wall-time budgets (None: unlimited).

    `progress(done, total)` is called from this thread after each stored pair.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    start = time.perf_counter()
    model = client.endpoint.model
    stored = cache.statuses(model, PROMPT_VERSION)
    skip = {OK, FAILED} if not retry_failed else {OK}
    todo: list[JudgeJob] = []
    seen: set[tuple[int, int]] = set()
    for job in jobs:
        key = (job.user, job.item)
        if key not in seen:
            seen.add(key)
            if stored.get(key) not in skip:
                todo.append(job)
    budget = RequestBudget(max_requests, max_seconds)
    stop = threading.Event()
    answered = failed = prompt_tokens = completion_tokens = malformed = 0
    pending = iter(todo)
    in_flight: set[cf.Future] = set()
    executor = cf.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge")
    try:
        while True:
            # Submitting lazily keeps a million-pair run from building a million futures, and
            # stops new pairs as soon as the budget is spent.
            while len(in_flight) < 2 * concurrency and not budget.exhausted and not stop.is_set():
                job = next(pending, None)
                if job is None:
                    break
                in_flight.add(executor.submit(judge_pair, client, job, retry, budget, stop))
            if not in_flight:
                break
            done, in_flight = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            errors = [f.exception() for f in done if f.exception() is not None]
            for future in done:
                if future.exception() is not None:
                    continue
                outcome = future.result()
                prompt_tokens += outcome.prompt_tokens
                completion_tokens += outcome.completion_tokens
                malformed += outcome.malformed
                if outcome.record is not None:
                    cache.put(model, PROMPT_VERSION, outcome.record)
                    answered += outcome.record.ok
                    failed += not outcome.record.ok
                    if progress is not None:
                        progress(answered + failed, len(todo))
            if errors:
                raise errors[0]  # e.g. EndpointError; the handler below stores what is in flight
    except BaseException:
        stop.set()
        for future in cf.as_completed(in_flight):
            if future.exception() is None and future.result().record is not None:
                cache.put(model, PROMPT_VERSION, future.result().record)
        raise
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return JudgeRunSummary(
        pairs=len(seen), cached=len(seen) - len(todo), answered=answered, failed=failed,
        unfinished=len(todo) - answered - failed, http_requests=budget.used,
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        seconds=time.perf_counter() - start, budget_exhausted=budget.exhausted,
        malformed_answers=malformed,
    )
