import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.core import group_stats as gs

# Jitted: op-by-op dispatch would compile every primitive separately.
group_stats = jax.jit(gs.group_stats)
group_zscore = jax.jit(gs.group_zscore)


def test_hand_computed_zscore():
    z, degenerate = group_zscore(jnp.array([[1.0, 2.0, 3.0]]))
    # mean 2, population std sqrt(2/3).
    np.testing.assert_allclose(z[0], np.array([-1.0, 0.0, 1.0]) / np.sqrt(2 / 3), rtol=1e-5)
    assert not degenerate[0]
    stats = group_stats(jnp.array([[1.0, 2.0, 3.0]]))
    np.testing.assert_allclose(stats.mean_b, [2.0])
    np.testing.assert_allclose(stats.std_b, [np.sqrt(2 / 3)], rtol=1e-6)


def test_sixteen_point_sevens_are_exactly_zero():
    v = jnp.full((1, 16), 0.7, jnp.float32)
    # Without the shift by the first value the float32 statistics see a spurious spread.
    naive = (v - v.mean(-1, keepdims=True)) / (v.std(-1, keepdims=True) + 1e-6)
    assert float(jnp.abs(naive).max()) > 0.01
    z, degenerate = group_zscore(v)
    assert np.all(np.asarray(z) == 0.0) and bool(degenerate[0])
    assert bool(group_stats(v).constant_b[0])


def test_constant_groups_relative_threshold_and_single_item():
    v = jnp.array([[5.0, 5.0, 5.0], [1e7, 1e7 + 1.0, 1e7], [0.0, 1e-3, 0.0]], jnp.float32)
    stats = group_stats(v)
    # 1e7 +- 1 is constant relative to its magnitude; 1e-3 on 0 is not (the floor is 1e-6 * 1).
    assert stats.constant_b.tolist() == [True, True, False]
    assert np.all(np.asarray(stats.z_bg[:2]) == 0.0)
    assert np.abs(np.asarray(stats.z_bg[2])).max() > 0.5
    one = group_stats(jnp.array([[3.0], [jnp.nan]]))
    assert one.constant_b.tolist() == [True, False]
    assert one.judged_b.tolist() == [True, False]
    assert np.all(np.asarray(one.z_bg) == 0.0)


def test_nan_marks_the_group_unjudged():
    v = jnp.array([[1.0, jnp.nan, 3.0, 4.0], [jnp.nan] * 4, [1.0, 2.0, 3.0, 4.0]])
    stats = group_stats(v)
    assert stats.judged_b.tolist() == [False, False, True]
    assert stats.constant_b.tolist() == [False, False, False]
    assert np.all(np.asarray(stats.z_bg[:2]) == 0.0)
    assert np.all(np.isfinite(np.asarray(stats.z_bg)))
    # nan-aware statistics of the finite values; NaN mean when there are none.
    np.testing.assert_allclose(stats.mean_b[0], 8.0 / 3.0, rtol=1e-6)
    assert np.isnan(stats.mean_b[1])
    _, degenerate = group_zscore(v)
    assert degenerate.tolist() == [True, True, False]


def test_matches_float64_formula_and_batches_over_leading_axes():
    rng = np.random.default_rng(0)
    v = rng.normal(3.0, 2.0, size=(2, 5, 7))
    z = np.asarray(group_stats(jnp.asarray(v, jnp.float32)).z_bg)
    expected = (v - v.mean(-1, keepdims=True)) / (v.std(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(z, expected, atol=1e-5)
