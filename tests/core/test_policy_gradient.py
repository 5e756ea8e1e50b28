"""The shared clipped policy-gradient objective and the k3 KL (core/policy_gradient.py)."""

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.core.policy_gradient import clipped_objective, k3_kl


def test_k3_is_nonnegative_and_zero_only_at_the_reference():
    logp = jax.random.normal(jax.random.key(0), (500,)) * 3
    ref = jax.random.normal(jax.random.key(1), (500,)) * 3
    k3 = np.asarray(k3_kl(logp, ref))
    assert (k3 >= 0).all() and (k3 > 0).mean() == 1.0
    np.testing.assert_array_equal(k3_kl(logp, logp), 0.0)
    # log r is clamped to [-10, 10]: a -inf reference log-prob gives a finite penalty.
    assert np.isfinite(k3_kl(jnp.zeros(1), jnp.full(1, -jnp.inf))).all()


def test_clipped_objective_by_hand():
    # ratios e^0.5 ~ 1.65, 1, e^-0.5 ~ 0.61 with eps 0.2, against A = +1 and A = -1.
    logp = jnp.array([0.5, 0.0, -0.5])
    old = jnp.zeros(3)
    up = clipped_objective(logp, old, jnp.ones(3), 0.2)
    np.testing.assert_allclose(up.ratio, np.exp([0.5, 0.0, -0.5]), rtol=1e-6)
    # A > 0: min(rho, clip(rho)) -> 1.2 (clipped), 1, 0.61 (unclipped, the pessimistic side).
    np.testing.assert_allclose(up.objective, [1.2, 1.0, np.exp(-0.5)], rtol=1e-6)
    np.testing.assert_array_equal(up.binds, [1.0, 0.0, 0.0])
    down = clipped_objective(logp, old, -jnp.ones(3), 0.2)
    # A < 0: min(-rho, -clip(rho)) -> -1.65 (unclipped), -1, -0.8 (clipped).
    np.testing.assert_allclose(down.objective, [-np.exp(0.5), -1.0, -0.8], rtol=1e-6)
    np.testing.assert_array_equal(down.binds, [0.0, 0.0, 1.0])
