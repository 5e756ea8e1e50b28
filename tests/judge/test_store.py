"""The answer cache (sqlite) and the evidence store read from it or from its npz export, locally and
on GCS (tests/fake_gcs.py)."""

import math

import numpy as np
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.judge import cache as cache_lib
from sgrec_jax.judge.aspects import NUM_ASPECTS
from sgrec_jax.judge.cache import FAILED, OK, JudgeCache, Record
from sgrec_jax.judge.store import EvidenceStore

M, V = "model-a", "v1"


def test_answers_survive_reopening_and_are_never_overwritten(tmp_path):
    path = tmp_path / "judge" / "cache.sqlite"
    with JudgeCache(path, fingerprint="data-1") as cache:
        cache.put(M, V, Record(1, 2, None, error="timeout"))
        cache.put(M, V, Record(1, 2, (0.1, math.nan, 0.3), rationale="r", context=(5, 6)))
        cache.put(M, V, Record(1, 2, None, error="late failure"))  # must not replace the answer
        cache.put_many(M, V, [Record(0, 7, (1.0, 0.0, 0.5)), Record(3, 3, None, error="x")])
        cache.put("model-b", V, Record(9, 9, (0.2, 0.2, 0.2)))
    with JudgeCache(path, fingerprint="data-1") as cache:
        assert cache.statuses(M, V) == {(1, 2): OK, (0, 7): OK, (3, 3): FAILED}
        assert cache.counts(M, V) == {OK: 2, FAILED: 1}
        first, second = cache.records(M, V)
        assert (first.user, first.item, second.user, second.item) == (0, 7, 1, 2)
        assert second.scores[0] == pytest.approx(0.1) and math.isnan(second.scores[1])
        assert second.context == (5, 6) and second.attempts == 2 and second.error is None
    with pytest.raises(ValueError, match="another dataset"):
        JudgeCache(path, fingerprint="data-2")


def test_a_cache_on_gcs_is_uploaded_as_it_fills_and_on_close(fake_gcs, monkeypatch):
    path, key = "gs://fake-bucket/run/judge/cache.sqlite", "fake-bucket/run/judge/cache.sqlite"
    with JudgeCache(path, fingerprint="data-1") as cache:
        cache.put(M, V, Record(1, 2, (0.1, 0.2, 0.3)))
        assert fake_gcs.get(key) is None  # uploaded every UPLOAD_SECONDS
        monkeypatch.setattr(cache_lib, "UPLOAD_SECONDS", 0.0)
        cache.put(M, V, Record(0, 7, (1.0, 0.0, 0.5)))
        assert fake_gcs.get(key) is not None
        cache.put(M, V, Record(3, 3, None, error="x"))
        store = EvidenceStore.from_cache(cache, M, V)
    assert fake_gcs.keys("fake-bucket/run/judge/") == [key]  # no WAL or journal beside it
    with JudgeCache(path, fingerprint="data-1") as cache:
        assert cache.statuses(M, V) == {(1, 2): OK, (0, 7): OK, (3, 3): FAILED}
    with pytest.raises(ValueError, match="another dataset"):
        JudgeCache(path, fingerprint="data-2")
    store.save("gs://fake-bucket/run/judge/evidence.npz")
    loaded = EvidenceStore.load("gs://fake-bucket/run/judge/evidence.npz")
    np.testing.assert_array_equal(loaded.evidence_na, store.evidence_na)


def test_store_lookup_and_npz_roundtrip(tmp_path):
    with JudgeCache(tmp_path / "c.sqlite", fingerprint="d") as cache:
        cache.put_many(M, V, [Record(4, 1, (0.1, 0.2, 0.3)), Record(0, 9, (0.7, math.nan, 0.9)),
                              Record(2, 2, None, error="garbage")])
        store = EvidenceStore.from_cache(cache, M, V)
    assert len(store) == 2
    users, items = np.array([0, 4, 2, 4, -1, 1 << 20]), np.array([9, 1, 2, 9, 1, 1])
    evidence, found = store.lookup(users, items)
    np.testing.assert_array_equal(found, [True, True, False, False, False, False])
    np.testing.assert_allclose(evidence[:2], [[0.7, np.nan, 0.9], [0.1, 0.2, 0.3]], rtol=1e-6)
    assert np.isnan(evidence[2:]).all() and evidence.dtype == np.float32
    assert evidence.shape == (6, NUM_ASPECTS)

    store.save(tmp_path / "evidence.npz")
    loaded = EvidenceStore.load(tmp_path / "evidence.npz")
    again, found_again = loaded.lookup(np.array([0, 4, 2]), np.array([9, 1, 2]))
    np.testing.assert_array_equal(found_again, found[:3])
    np.testing.assert_array_equal(again, evidence[:3])
    assert loaded.source == f"{M} / {V}"


def test_empty_store_and_bad_files(tmp_path):
    empty = EvidenceStore(np.zeros(0), np.zeros(0), np.zeros((0, NUM_ASPECTS)))
    evidence, found = empty.lookup(np.array([0, 1]), np.array([0, 1]))
    assert not found.any() and np.isnan(evidence).all()
    with pytest.raises(ValueError, match="twice"):
        EvidenceStore(np.array([1, 1]), np.array([2, 2]), np.zeros((2, NUM_ASPECTS)))
    np.savez(tmp_path / "bad.npz", users=np.zeros(1))
    with pytest.raises(DataFormatError, match="bad.npz"):
        EvidenceStore.load(tmp_path / "bad.npz")
