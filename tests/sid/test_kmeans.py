import jax
import numpy as np
import pytest

from sgrec_jax.sid.kmeans import kmeans


def blobs(sizes, dim=8, spread=10.0, noise=0.1, seed=0):
    """Well-separated Gaussian blobs: points [N, dim] and their blob labels [N]."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim)) * spread
    labels = np.repeat(np.arange(len(sizes)), sizes)
    x = centers[labels] + noise * rng.normal(size=(len(labels), dim))
    return x.astype(np.float32), labels


def test_recovers_separated_clusters():
    x, labels = blobs([50, 40, 30, 20])
    fit = kmeans(x, 4, jax.random.key(0))
    pairs = set(zip(labels.tolist(), fit.assign_n.tolist()))
    assert len(pairs) == 4  # each blob is exactly one cluster, and no two blobs share one
    for k in range(4):
        np.testing.assert_allclose(fit.centroids_kd[k], x[fit.assign_n == k].mean(0), atol=1e-4)
    assert fit.num_clusters == 4 and fit.assign_n.dtype == np.int32


@pytest.mark.parametrize("n", [180, 181, 185])
def test_balanced_sizes_differ_by_at_most_one(n):
    # One big blob and five small ones: plain k-means follows the blobs, balanced does not.
    x, _ = blobs([n - 30, 6, 6, 6, 6, 6], seed=1)
    plain = np.bincount(kmeans(x, 6, jax.random.key(0)).assign_n, minlength=6)
    balanced = np.bincount(kmeans(x, 6, jax.random.key(0), balanced=True).assign_n, minlength=6)
    assert plain.max() - plain.min() > 1
    assert balanced.sum() == n and balanced.max() - balanced.min() <= 1


@pytest.mark.parametrize("init", ["kmeans++", "random"])
def test_deterministic_given_key(init):
    x = np.random.default_rng(2).normal(size=(200, 5)).astype(np.float32)
    a = kmeans(x, 7, jax.random.key(3), init=init)
    b = kmeans(x, 7, jax.random.key(3), init=init)
    c = kmeans(x, 7, jax.random.key(4), init=init)
    np.testing.assert_array_equal(a.centroids_kd, b.centroids_kd)
    np.testing.assert_array_equal(a.assign_n, b.assign_n)
    assert not np.array_equal(a.centroids_kd, c.centroids_kd)


def test_fewer_points_than_clusters():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    fit = kmeans(x, 5, jax.random.key(0))
    assert fit.num_clusters == 3
    np.testing.assert_array_equal(fit.assign_n, [0, 1, 2])
    np.testing.assert_array_equal(fit.centroids_kd, x[[0, 1, 2, 0, 1]])


def test_fewer_distinct_points_than_clusters_stays_finite():
    # Two distinct points, three clusters: a cluster goes empty and is re-seeded.
    x = np.repeat(np.array([[0.0, 0.0], [5.0, 5.0]], np.float32), 5, axis=0)
    fit = kmeans(x, 3, jax.random.key(0))
    assert np.isfinite(fit.centroids_kd).all()
    np.testing.assert_allclose(fit.centroids_kd[fit.assign_n], x)


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="non-empty"):
        kmeans(np.zeros(4, np.float32), 2, jax.random.key(0))
    with pytest.raises(ValueError, match="init"):
        kmeans(np.zeros((4, 2), np.float32), 2, jax.random.key(0), init="bogus")
