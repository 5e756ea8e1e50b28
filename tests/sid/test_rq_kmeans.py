import numpy as np

from sgrec_jax.sid.rq_kmeans import reconstruct, rq_kmeans


def clustered(n=400, dim=8, topics=10, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(topics, dim)) * 3
    return (centers[rng.integers(0, topics, n)] + rng.normal(size=(n, dim))).astype(np.float32)


def test_reconstruction_error_decreases_with_levels():
    x = clustered()
    fit = rq_kmeans(x, levels=3, codebook_size=8, seed=0)
    assert fit.codes_nl.shape == (400, 3) and fit.codes_nl.dtype == np.int32
    assert fit.codebooks_lkd.shape == (3, 8, 8)
    assert fit.codes_nl.min() >= 0 and fit.codes_nl.max() < 8
    errors = [
        np.mean((x - reconstruct(fit.codes_nl[:, :levels], fit.codebooks_lkd)) ** 2)
        for levels in range(4)
    ]
    assert errors[0] > errors[1] > errors[2] > errors[3]
    np.testing.assert_allclose(errors[0], np.mean(x**2))


def test_seeded_and_balanced():
    x = clustered(n=160)
    a = rq_kmeans(x, levels=2, codebook_size=8, seed=1, balanced=True)
    b = rq_kmeans(x, levels=2, codebook_size=8, seed=1, balanced=True)
    np.testing.assert_array_equal(a.codes_nl, b.codes_nl)
    for level in range(2):
        np.testing.assert_array_equal(np.bincount(a.codes_nl[:, level], minlength=8), [20] * 8)
