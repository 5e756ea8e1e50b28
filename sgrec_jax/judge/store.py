"""Aspect evidence for readers: a (user, item) -> evidence lookup over the cache or an npz file.

    store = EvidenceStore.from_cache(cache, model, prompt_version)   # or EvidenceStore.load(path)
    evidence_na, found_n = store.lookup(users_n, items_n)
    store.save(workdir / "judge" / "evidence.npz")

Only answered pairs are in a store; everything else comes back NaN with found = False. The npz
file holds `users` int32 [n], `items` int32 [n], `evidence` float32 [n, A] (columns in `aspects`
order) and `source` (which model and prompt version produced it).
"""

from __future__ import annotations

import os

import numpy as np

from sgrec_jax.core.files import read_npz, write_npz
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.judge.aspects import ASPECTS, NUM_ASPECTS, missing_evidence
from sgrec_jax.judge.cache import JudgeCache


def _keys(users_n: np.ndarray, items_n: np.ndarray) -> np.ndarray:
    return (np.asarray(users_n, np.int64) << 32) | np.asarray(items_n, np.int64)


class EvidenceStore:
    """Evidence of distinct (user, item) pairs, sorted for vectorised lookups."""

    def __init__(self, users_n: np.ndarray, items_n: np.ndarray, evidence_na: np.ndarray,
                 source: str = ""):
        users_n = np.asarray(users_n, np.int32).reshape(-1)
        items_n = np.asarray(items_n, np.int32).reshape(-1)
        evidence_na = np.asarray(evidence_na, np.float32)
        if evidence_na.shape != (len(users_n), NUM_ASPECTS) or len(items_n) != len(users_n):
            raise ValueError(
                f"evidence store needs users [n], items [n], evidence [n, {NUM_ASPECTS}]; got "
                f"{users_n.shape}, {items_n.shape}, {evidence_na.shape}"
            )
        if ((users_n < 0) | (items_n < 0)).any():
            raise ValueError("evidence store: negative user or item index")
        keys_n = _keys(users_n, items_n)
        order = np.argsort(keys_n, kind="stable")
        self.keys_n = keys_n[order]
        if (np.diff(self.keys_n) == 0).any():
            raise ValueError("evidence store: a (user, item) pair appears twice")
        self.users_n, self.items_n = users_n[order], items_n[order]
        self.evidence_na = evidence_na[order]
        self.source = source

    def __len__(self) -> int:
        return len(self.keys_n)

    @classmethod
    def from_cache(cls, cache: JudgeCache, model: str, prompt_version: str) -> EvidenceStore:
        """Every answered pair of (model, prompt version) in the cache."""
        records = list(cache.records(model, prompt_version))
        return cls(
            np.array([r.user for r in records], np.int32),
            np.array([r.item for r in records], np.int32),
            np.array([r.scores for r in records], np.float32).reshape(-1, NUM_ASPECTS),
            source=f"{model} / {prompt_version}",
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> EvidenceStore:
        """Reads a file written by save(); a malformed file raises DataFormatError."""
        try:
            f = read_npz(path)
            aspects = tuple(str(a) for a in f["aspects"])
            if aspects != ASPECTS:
                raise DataFormatError(path, f"aspects {aspects}, expected {ASPECTS}")
            return cls(f["users"], f["items"], f["evidence"], source=str(f["source"]))
        except (KeyError, ValueError, OSError) as e:
            if isinstance(e, DataFormatError):
                raise
            raise DataFormatError(path, f"not an evidence file: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes the store as an npz file, atomically."""
        write_npz(
            path, users=self.users_n, items=self.items_n, evidence=self.evidence_na,
            aspects=np.array(ASPECTS), source=np.array(self.source),
        )

    def lookup(self, users_n: np.ndarray, items_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(evidence float32 [n, A], NaN where not found; found bool [n]) of the given pairs."""
        users_n, items_n = np.asarray(users_n).reshape(-1), np.asarray(items_n).reshape(-1)
        if users_n.shape != items_n.shape:
            raise ValueError(f"users {users_n.shape} and items {items_n.shape} differ in shape")
        evidence_na = missing_evidence(len(users_n))
        valid_n = (users_n >= 0) & (items_n >= 0)
        keys_n = _keys(np.where(valid_n, users_n, 0), np.where(valid_n, items_n, 0))
        pos_n = np.minimum(np.searchsorted(self.keys_n, keys_n), max(len(self) - 1, 0))
        found_n = valid_n & (len(self) > 0)
        if len(self):
            found_n &= self.keys_n[pos_n] == keys_n
            evidence_na[found_n] = self.evidence_na[pos_n[found_n]]
        return evidence_na, found_n
