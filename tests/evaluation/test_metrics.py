import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.evaluation.metrics import (
    PER_USER,
    catalog_coverage,
    ndcg_at_k,
    ranking_metrics,
    ranking_metrics_jnp,
    recall_at_k,
    target_rank,
    valid_rate,
)

# Targets at rank 0, 3, 7, absent, and at 2 (repeated at 5: the first occurrence counts).
RANKED = np.array(
    [
        [7, 1, 2, 3, 4, 5, 6, 8, 9, 10],
        [1, 2, 3, 7, 4, 5, 6, 8, 9, 10],
        [1, 2, 3, 4, 5, 6, -1, 7, 9, 10],
        [1, 2, 3, 4, 5, 6, 8, 9, 10, -1],
        [1, 2, 7, 3, 4, 7, 6, 8, 9, 10],
    ]
)
TARGET = np.array([7, 7, 7, 7, 7])
R3, R7 = 1 / np.log2(5), 1 / np.log2(9)  # NDCG at ranks 3 and 7.


def test_hand_computed_per_user_values():
    np.testing.assert_array_equal(target_rank(RANKED, TARGET), [0, 3, 7, 10, 2])
    np.testing.assert_array_equal(recall_at_k(RANKED, TARGET, 5), [1, 1, 0, 0, 1])
    np.testing.assert_array_equal(recall_at_k(RANKED, TARGET, 10), [1, 1, 1, 0, 1])
    np.testing.assert_allclose(ndcg_at_k(RANKED, TARGET, 5), [1, R3, 0, 0, 0.5])
    np.testing.assert_allclose(ndcg_at_k(RANKED, TARGET, 10), [1, R3, R7, 0, 0.5])
    assert R3 == pytest.approx(0.4306765581) and R7 == pytest.approx(0.3154648768)


def test_ranking_metrics_means_and_per_user():
    out = ranking_metrics(RANKED, TARGET)
    assert list(out) == ["recall@5", "ndcg@5", "recall@10", "ndcg@10", PER_USER]
    assert out["recall@5"] == pytest.approx(3 / 5)
    assert out["recall@10"] == pytest.approx(4 / 5)
    assert out["ndcg@5"] == pytest.approx((1 + R3 + 0.5) / 5)
    assert out["ndcg@10"] == pytest.approx((1 + R3 + R7 + 0.5) / 5)
    np.testing.assert_array_equal(out[PER_USER]["recall@10"], [1, 1, 1, 0, 1])
    assert list(ranking_metrics(RANKED, TARGET, ks=(1,))) == ["recall@1", "ndcg@1", PER_USER]


def test_jnp_version_matches_numpy_under_jit():
    rng = np.random.default_rng(0)
    ranked = rng.integers(-1, 30, (64, 10))
    target = rng.integers(0, 30, 64)
    jitted = jax.jit(ranking_metrics_jnp, static_argnames="ks")
    got = jitted(jnp.asarray(ranked), jnp.asarray(target), ks=(5, 10))
    want = ranking_metrics(ranked, target)[PER_USER]
    assert set(got) == set(want) and want["recall@10"].sum() > 0
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), want[name], rtol=1e-6)


def test_coverage_and_valid_rate():
    ranked = np.array([[0, 1, 5], [1, -1, 2], [-1, 9, 3]])
    # Top 2 holds items {0, 1, 9} (and a -1, not an item) of a 10-item catalog.
    assert catalog_coverage(ranked, 10, 2) == pytest.approx(0.3)
    assert catalog_coverage(ranked, 10, 3) == pytest.approx(0.6)
    # 5 and 9 are outside a 5-item catalog: neither covered nor valid.
    assert catalog_coverage(ranked, 5, 3) == pytest.approx(0.8)
    assert valid_rate(ranked, 10) == pytest.approx(7 / 9)
    assert valid_rate(ranked, 5) == pytest.approx(5 / 9)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=11 is outside 1..10"):
        ranking_metrics(RANKED, TARGET, ks=(5, 11))
    with pytest.raises(ValueError, match="targets must be item indices"):
        recall_at_k(RANKED, np.array([7, 7, -1, 7, 7]), 5)
    with pytest.raises(ValueError, match="need ranked"):
        ndcg_at_k(RANKED, TARGET[:3], 5)
    with pytest.raises(ValueError, match="no users"):
        ranking_metrics(np.zeros((0, 10), int), np.zeros(0, int))
    with pytest.raises(ValueError, match="1 <= k <= K"):
        catalog_coverage(RANKED, 10, 0)
