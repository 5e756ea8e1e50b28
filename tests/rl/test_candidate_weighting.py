"""How much each candidate counts in the update (rl/candidate_weighting.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.rl.candidate_weighting import (
    candidate_advantage,
    policy_weighted_advantage,
    policy_weights,
)

V = 12  # Items of a toy policy: pi = softmax(theta) over V items.
ITEMS_BG = [[3, 7, 0, 5, -1], [1, 2, 4, 6, 11]]  # Two groups of G = 5; one padded candidate.


def _setup():
    theta_bv = jax.random.normal(jax.random.key(0), (2, V)) * 1.5
    advantage_bg = jax.random.normal(jax.random.key(1), (2, 5))
    items_bg = jnp.asarray(ITEMS_BG, jnp.int32)
    return theta_bv, advantage_bg, items_bg


def _item_logprob_bg(theta_bv, items_bg):
    logp_bv = jax.nn.log_softmax(theta_bv, axis=-1)
    return jnp.take_along_axis(logp_bv, jnp.maximum(items_bg, 0), axis=-1)


def test_the_weighted_update_is_the_gradient_of_the_expected_advantage_over_the_group():
    """mean_g A'_g grad log pi(g) (the loss's form, padding included in the mean) equals
    grad sum_g A_g pi(g) / sum_j pi(j) over each group's items, by autodiff of the latter."""
    theta_bv, advantage_bg, items_bg = _setup()
    valid_bg = items_bg >= 0
    weighted_bg = policy_weighted_advantage(
        advantage_bg, _item_logprob_bg(theta_bv, items_bg), valid_bg)

    def surrogate(theta_bv):
        logp_bg = jnp.where(valid_bg, _item_logprob_bg(theta_bv, items_bg), 0.0)
        return (weighted_bg * logp_bg).mean(-1).sum()

    def expected_advantage(theta_bv):
        p_bg = jnp.where(valid_bg, jnp.exp(_item_logprob_bg(theta_bv, items_bg)), 0.0)
        return ((p_bg / p_bg.sum(-1, keepdims=True)) * advantage_bg).sum()

    np.testing.assert_allclose(jax.grad(surrogate)(theta_bv),
                               jax.grad(expected_advantage)(theta_bv), rtol=1e-5, atol=1e-6)
    # The weighted advantages are centred under w, the padded candidate gets nothing.
    w_bg = policy_weights(_item_logprob_bg(theta_bv, items_bg), valid_bg)
    np.testing.assert_allclose(w_bg.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(weighted_bg.sum(-1), 0.0, atol=1e-5)
    assert w_bg[0, 4] == 0 and weighted_bg[0, 4] == 0


def test_equal_probabilities_give_plain_grpo_centred():
    _, advantage_bg, items_bg = _setup()
    items_bg = items_bg.at[0, 4].set(9)  # all valid
    flat_bg = jnp.full(items_bg.shape, -2.0)
    np.testing.assert_allclose(
        candidate_advantage("policy", advantage_bg, flat_bg, items_bg),
        advantage_bg - advantage_bg.mean(-1, keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(
        candidate_advantage("uniform", advantage_bg, None, items_bg), advantage_bg)


def test_a_hit_group_pushes_each_beam_down_by_its_probability():
    """Reward 1 on the target t, 0 elsewhere, advantages r - mean: A'_g = G w_g (r_g - w_t), so
    the target gets G w_t (1 - w_t) and each other beam -G w_g w_t (plain GRPO: -1/G each)."""
    logprob_bg = jnp.log(jnp.asarray([[0.4, 0.2, 0.1, 0.05]]))
    reward_bg = jnp.asarray([[0.0, 0.0, 1.0, 0.0]])
    advantage_bg = reward_bg - reward_bg.mean(-1, keepdims=True)
    items_bg = jnp.asarray([[0, 1, 2, 3]], jnp.int32)
    w = np.array([0.4, 0.2, 0.1, 0.05]) / 0.75
    want = 4 * w * (np.array([0.0, 0.0, 1.0, 0.0]) - w[2])
    np.testing.assert_allclose(candidate_advantage("policy", advantage_bg, logprob_bg, items_bg),
                               want[None], rtol=1e-5)


def test_a_nan_advantage_keeps_its_group_non_finite_and_leaves_the_others():
    theta_bv, advantage_bg, items_bg = _setup()
    advantage_bg = advantage_bg.at[1, 2].set(jnp.nan)
    out = policy_weighted_advantage(advantage_bg, _item_logprob_bg(theta_bv, items_bg),
                                    items_bg >= 0)
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()


def test_unknown_weighting_and_missing_log_probs_are_named():
    _, advantage_bg, items_bg = _setup()
    with pytest.raises(ValueError, match="candidate_weighting 'rank' is not one of uniform"):
        candidate_advantage("rank", advantage_bg, None, items_bg)
    with pytest.raises(ValueError, match="needs the rollout policy's log-probs"):
        candidate_advantage("policy", advantage_bg, None, items_bg)
