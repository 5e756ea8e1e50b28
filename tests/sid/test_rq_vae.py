import numpy as np
import pytest

from sgrec_jax.sid.metrics import codebook_usage
from sgrec_jax.sid.rq_vae import encode_codes, rq_vae

TINY = dict(levels=2, codebook_size=8, batch_size=64, hidden_dims=(32,), latent_dim=4)


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(16, 16)) * 3
    return (centers[rng.integers(0, 16, 256)] + rng.normal(size=(256, 16))).astype(np.float32)


@pytest.fixture(scope="module")
def trained(x):
    return rq_vae(x, seed=0, epochs=40, learning_rate=1e-2, **TINY)


def test_trains_and_uses_its_codebooks(x, trained):
    assert trained.codes_nl.shape == (256, 2) and trained.codes_nl.dtype == np.int32
    assert trained.loss_history.shape == (40,) and trained.usage_history.shape == (40, 2)
    assert trained.loss_history[-1] < 0.7 * trained.loss_history[0]
    usage = codebook_usage(trained.codes_nl, 8)
    assert usage["usage_l0"] >= 0.75 and usage["usage_l1"] >= 0.75
    np.testing.assert_array_equal(encode_codes(trained.model, x, batch_size=100), trained.codes_nl)


def test_seeded(x, trained):
    again = rq_vae(x, seed=0, epochs=40, learning_rate=1e-2, **TINY)
    np.testing.assert_array_equal(again.codes_nl, trained.codes_nl)
    np.testing.assert_array_equal(again.loss_history, trained.loss_history)


def test_dead_code_reset_revives_codes(x):
    # A random codebook init leaves codes that no item picks; resets move them onto residuals.
    kept = rq_vae(x, seed=0, epochs=20, kmeans_init=False, reset_dead=False, **TINY)
    reset = rq_vae(x, seed=0, epochs=20, kmeans_init=False, reset_dead=True, **TINY)
    assert kept.codes_reset == 0 and reset.codes_reset > 0
    assert kept.usage_history[0].min() < 1.0
    kept_usage = codebook_usage(kept.codes_nl, 8)
    reset_usage = codebook_usage(reset.codes_nl, 8)
    assert sum(reset_usage[f"usage_l{l}"] for l in range(2)) > sum(
        kept_usage[f"usage_l{l}"] for l in range(2)
    )
