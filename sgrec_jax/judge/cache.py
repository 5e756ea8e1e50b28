"""The judge's on-disk answer cache: one sqlite3 row per (model, prompt version, user, item).

    with JudgeCache(path, fingerprint=dataset_fingerprint(dataset)) as cache:
        done = cache.statuses(model, PROMPT_VERSION)      # {(user, item): "ok" | "failed"}
        cache.put(model, PROMPT_VERSION, record)          # committed at once

Every answer is committed as it arrives (WAL journal, synchronous FULL), so a crash or a kill
loses at most the answers still in flight. A failure is recorded too ("failed", with the
error), so a rerun does not pay for it again unless asked to retry failures; an "ok" row is
never overwritten. Users and items are internal indices; the file remembers a fingerprint of the
dataset (name, user ids, item ids) and refuses to serve another dataset, whose indices would
mean other users and items. Nothing secret is stored: no request headers, no API key.

sqlite needs a local file: a cache at a URI (gs://...) is copied to a local temp file, used
there and uploaded whole every UPLOAD_SECONDS and on close, so a killed process loses the answers
since the last upload. One process at a time may use such a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator

from etils import epath

from sgrec_jax.core.files import atomic_write, is_local
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.judge.aspects import ASPECTS

OK = "ok"
FAILED = "failed"
UPLOAD_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgements (
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    user INTEGER NOT NULL,
    item INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    scores TEXT,
    rationale TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    latency_s REAL,
    context TEXT,
    created REAL NOT NULL,
    PRIMARY KEY (model, prompt_version, user, item)
);
"""

# A failure may be replaced (by a retry's answer or error); an answer never is.
_UPSERT = """
INSERT INTO judgements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (model, prompt_version, user, item) DO UPDATE SET
    status = excluded.status, scores = excluded.scores, rationale = excluded.rationale,
    error = excluded.error, attempts = judgements.attempts + excluded.attempts,
    latency_s = excluded.latency_s, context = excluded.context, created = excluded.created
WHERE judgements.status != 'ok'
"""


def dataset_fingerprint(dataset: SeqRecDataset) -> str:
    """sha256 of the dataset's name, user ids and item ids: what internal indices refer to."""
    digest = hashlib.sha256(dataset.name.encode())
    for ids in (dataset.user_ids, dataset.items.ids):
        digest.update(b"\0".join(i.encode() for i in ids))
        digest.update(b"\1")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Record:
    """One judged (user, item) pair, or one that could not be judged.

    Attributes:
      user, item: internal indices.
      scores: per aspect (ASPECTS order) in [0, 1] or NaN; None for a failure.
      rationale: the model's rationale ("" for feature evidence).
      error: why it was not judged (None when judged).
      attempts: requests spent on it (retries included).
      latency_s: seconds of the successful request, or of the whole attempt for a failure.
      context: the history item indices the judge saw, for audits.
    """

    user: int
    item: int
    scores: tuple[float, ...] | None
    rationale: str = ""
    error: str | None = None
    attempts: int = 1
    latency_s: float | None = None
    context: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.scores is not None


def _scores_json(scores: tuple[float, ...]) -> str:
    if len(scores) != len(ASPECTS):
        raise ValueError(f"{len(scores)} scores for {len(ASPECTS)} aspects {ASPECTS}")
    return json.dumps({a: None if math.isnan(s) else float(s) for a, s in zip(ASPECTS, scores)})


def _scores_from_json(text: str) -> tuple[float, ...]:
    by_aspect = json.loads(text)
    return tuple(math.nan if by_aspect.get(a) is None else float(by_aspect[a]) for a in ASPECTS)


class JudgeCache:
    """The sqlite3 cache of judge answers (see module docstring). Use from one thread."""

    def __init__(self, path: str | os.PathLike, *, fingerprint: str):
        self.path = os.fspath(path)
        self._staging = None if is_local(self.path) else tempfile.mkdtemp(prefix="judge_cache_")
        if self._staging is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._local = self.path
        else:
            self._local = os.path.join(self._staging, "cache.sqlite")
            if epath.Path(self.path).exists():
                pathlib.Path(self._local).write_bytes(epath.Path(self.path).read_bytes())
        self._uploaded = time.monotonic()
        self._conn = sqlite3.connect(self._local, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'dataset'").fetchone()
        if row is None:
            self._conn.execute("INSERT INTO meta VALUES ('dataset', ?)", (fingerprint,))
        elif row[0] != fingerprint:
            self.close()
            raise ValueError(
                f"{self.path}: judge cache of another dataset (fingerprint {row[0][:12]}..., "
                f"this dataset {fingerprint[:12]}...); use another work directory"
            )

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        staged = self._staging is not None and os.path.exists(self._staging)
        if staged:
            self._upload()
        self._conn.close()
        if staged:
            shutil.rmtree(self._staging)

    def _upload(self) -> None:
        """Copies the local database to the cache's URI, its WAL folded in first."""
        self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = pathlib.Path(self._local).read_bytes()
        atomic_write(self.path, lambda f: f.write(data))
        self._uploaded = time.monotonic()

    def put(self, model: str, prompt_version: str, record: Record) -> None:
        """Stores one record and commits it (an existing answer is kept as it is)."""
        self.put_many(model, prompt_version, [record])

    def put_many(self, model: str, prompt_version: str, records: Iterable[Record]) -> None:
        """Stores records in one transaction (for cheap backends that produce many at once)."""
        now = time.time()
        rows = [
            (
                model, prompt_version, int(r.user), int(r.item), OK if r.ok else FAILED,
                _scores_json(r.scores) if r.ok else None, r.rationale, r.error, int(r.attempts),
                r.latency_s, json.dumps([int(h) for h in r.context]), now,
            )
            for r in records
        ]
        with self._conn:
            self._conn.execute("BEGIN")
            self._conn.executemany(_UPSERT, rows)
        if self._staging is not None and time.monotonic() - self._uploaded >= UPLOAD_SECONDS:
            self._upload()

    def statuses(self, model: str, prompt_version: str) -> dict[tuple[int, int], str]:
        """{(user, item): "ok" | "failed"} of every stored pair of (model, prompt version)."""
        cursor = self._conn.execute(
            "SELECT user, item, status FROM judgements WHERE model = ? AND prompt_version = ?",
            (model, prompt_version),
        )
        return {(u, i): s for u, i, s in cursor}

    def records(self, model: str, prompt_version: str, status: str = OK) -> Iterator[Record]:
        """The stored records with `status`, ordered by (user, item)."""
        cursor = self._conn.execute(
            "SELECT user, item, scores, rationale, error, attempts, latency_s, context "
            "FROM judgements WHERE model = ? AND prompt_version = ? AND status = ? "
            "ORDER BY user, item",
            (model, prompt_version, status),
        )
        for user, item, scores, rationale, error, attempts, latency, context in cursor:
            yield Record(
                user=user, item=item, scores=_scores_from_json(scores) if scores else None,
                rationale=rationale or "", error=error, attempts=attempts, latency_s=latency,
                context=tuple(json.loads(context or "[]")),
            )

    def counts(self, model: str, prompt_version: str) -> dict[str, int]:
        """{"ok": n, "failed": m} for (model, prompt version)."""
        cursor = self._conn.execute(
            "SELECT status, COUNT(*) FROM judgements WHERE model = ? AND prompt_version = ? "
            "GROUP BY status",
            (model, prompt_version),
        )
        return {OK: 0, FAILED: 0, **dict(cursor.fetchall())}
