import numpy as np
import pytest

from sgrec_jax.data.bids import simulate_bids


def test_seeded_and_deterministic():
    a, desc_a = simulate_bids(1000, seed=3)
    b, desc_b = simulate_bids(1000, seed=3)
    c, _ = simulate_bids(1000, seed=4)
    np.testing.assert_array_equal(a, b)
    assert desc_a == desc_b
    assert not np.array_equal(a, c)


def test_shape_dtype_positive_and_description():
    bids, description = simulate_bids(50, seed=0, mu=1.0, sigma=0.25)
    assert bids.shape == (50,) and bids.dtype == np.float32
    assert (bids > 0).all()
    assert "simulated bid" in description
    assert "mu=1.0" in description and "sigma=0.25" in description and "seed 0" in description


def test_distribution_is_the_documented_lognormal():
    bids, _ = simulate_bids(20000, seed=1, mu=0.5, sigma=0.4)
    logs = np.log(bids.astype(np.float64))
    assert abs(logs.mean() - 0.5) < 0.02
    assert abs(logs.std() - 0.4) < 0.02


def test_zero_sigma_gives_constant_bids():
    bids, _ = simulate_bids(5, seed=0, mu=0.0, sigma=0.0)
    np.testing.assert_allclose(bids, 1.0)


@pytest.mark.parametrize("kwargs", [{"num_items": -1}, {"num_items": 3, "sigma": -0.1}])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        simulate_bids(seed=0, **kwargs)
