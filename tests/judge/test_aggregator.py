"""Stage-2 aggregation: weights math, NaN handling, and GRPO / Bradley-Terry on a toy problem."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.judge.aggregator import (
    AspectPolicy,
    GrpoOptions,
    grpo_loss,
    sample_group,
    train_aggregator,
)
from sgrec_jax.judge.bradley_terry import BradleyTerryOptions, train_bradley_terry
from sgrec_jax.judge.context import ContextTables, context_features, context_tables
from sgrec_jax.judge.fitting import FitOptions
from sgrec_jax.judge.holistic import (
    expected_weights,
    holistic_score,
    level_weights,
    pair_auc,
    pair_margin,
)
from tests.judge.test_pairs import EMB, make_dataset

NAN = np.nan


def test_context_features_hand_worked():
    tables = ContextTables(emb_nd=jnp.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
                           log_pop_n=jnp.array([0.2, 0.4, 1.0]))
    x = np.asarray(context_features(tables, jnp.array([[-1, 0, 1], [-1, -1, -1]])))
    coherence = np.sqrt(0.5)
    np.testing.assert_allclose(x[0], [0.5, 0.5, np.log(3) / np.log(4), 0.3, coherence,
                                      (1 + 0.5 / coherence) / 2], rtol=1e-6)
    np.testing.assert_allclose(x[1], 0.0)  # an empty history has no features
    assert tables.dim == 6


def test_context_popularity_counts_training_items_only():
    data = make_dataset()
    tables = context_tables(data, EMB)
    only_held_out = np.setdiff1d(np.concatenate([s[-2:] for s in data.sequences]),
                                 np.concatenate([s[:-2] for s in data.sequences]))
    assert only_held_out.size and (np.asarray(tables.log_pop_n)[only_held_out] == 0).all()


def test_level_weights_normalise_and_all_zero_is_uniform():
    w = np.asarray(level_weights(jnp.array([[1, 3, 0], [0, 0, 0], [4, 4, 4]])))
    np.testing.assert_allclose(w, [[0.25, 0.75, 0], [1 / 3] * 3, [1 / 3] * 3], rtol=1e-6)


def test_expected_weights_hand_worked():
    # Aspect 0: P(level 2) = P(level 4) = 1/2 -> E = 3; aspect 1: level 1 surely -> E = 1;
    # aspect 2: level 0 surely -> E = 0. Weights (3, 1, 0) / 4.
    big = 50.0
    logits = jnp.full((3, 5), -big).at[0, 2].set(0).at[0, 4].set(0).at[1, 1].set(0).at[2, 0].set(0)
    np.testing.assert_allclose(expected_weights(logits), [0.75, 0.25, 0.0], atol=1e-6)
    # All mass on level 0 everywhere -> uniform, not 0/0.
    zero = jnp.full((3, 5), -big).at[:, 0].set(0)
    np.testing.assert_allclose(expected_weights(zero), [1 / 3] * 3, atol=1e-6)
    np.testing.assert_allclose(expected_weights(jnp.zeros((2, 3, 5))), np.full((2, 3), 1 / 3),
                               rtol=1e-6)


def test_untrained_policy_is_uniform():
    policy = AspectPolicy(7, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 7))
    np.testing.assert_allclose(policy.weights(x), np.full((4, 3), 1 / 3), rtol=1e-6)


def test_holistic_renormalises_over_present_aspects():
    w = jnp.array([0.5, 0.25, 0.25])
    np.testing.assert_allclose(holistic_score(w, jnp.array([0.8, NAN, 0.4])),
                               (0.5 * 0.8 + 0.25 * 0.4) / 0.75, rtol=1e-6)
    np.testing.assert_allclose(holistic_score(w, jnp.array([0.8, 0.2, 0.4])), 0.55, rtol=1e-6)
    assert np.isnan(holistic_score(w, jnp.array([NAN, NAN, NAN])))
    # No weight on the present aspects: they are averaged (all zero -> uniform).
    np.testing.assert_allclose(holistic_score(jnp.array([0.0, 1.0, 0.0]),
                                              jnp.array([0.8, NAN, 0.4])), 0.6, rtol=1e-6)


def test_holistic_gradient_is_finite_with_nan_evidence():
    grad = jax.grad(lambda w: holistic_score(w, jnp.array([0.8, NAN, 0.4])))(jnp.ones(3) / 3)
    assert np.isfinite(grad).all() and grad[1] == 0


def test_pair_margin_compares_on_jointly_present_aspects():
    w = jnp.array([0.0, 1.0, 0.0])  # all weight on the aspect item j lacks
    margin = pair_margin(w, jnp.array([0.3, 1.0, 0.5]), jnp.array([0.2, NAN, 0.5]))
    # Aspect 1 is dropped for both items, so i wins on aspect 0 only (averaged: 0.4 vs 0.35).
    np.testing.assert_allclose(margin, 0.05, rtol=1e-5)


def test_pair_auc_counts_ties_half_and_skips_incomparable():
    ev_i = np.array([[0.9, 0.5], [0.5, 0.5], [0.1, 0.5], [NAN, 0.2]], np.float32)
    ev_j = np.array([[0.1, 0.5], [0.5, 0.5], [0.9, 0.5], [0.3, NAN]], np.float32)
    assert pair_auc(np.array([0.5, 0.5]), ev_i, ev_j) == pytest.approx((1 + 0.5 + 0) / 3)


def test_first_update_ratio_is_one_and_rewards_follow_the_margin():
    policy = AspectPolicy(2, rngs=nnx.Rngs(0))
    x = jnp.eye(2)
    ev_i = jnp.array([[1.0, 0.0, 0.5], [0.9, NAN, 0.6]])
    ev_j = jnp.array([[0.0, 1.0, 0.5], [0.1, 0.9, 0.5]])
    rollout = sample_group(policy(x), ev_i, ev_j, jax.random.key(0), 32)
    assert rollout["levels"].shape == (2, 32, 3) and rollout["advantage"].shape == (2, 32)
    w = np.asarray(level_weights(rollout["levels"]))
    np.testing.assert_array_equal(rollout["reward"][0], w[0, :, 0] > w[0, :, 1])
    assert 0 < rollout["reward"][0].mean() < 1
    # Request 1: item j's aspect 1 has no counterpart, and item i wins on both shared aspects,
    # so every sample wins (even weight on aspect 1 only: shared aspects then averaged).
    np.testing.assert_array_equal(rollout["reward"][1], np.ones(32))
    np.testing.assert_array_equal(rollout["advantage"][1], np.zeros(32))  # constant group
    loss, aux = grpo_loss(policy, {"x": x, **{k: rollout[k] for k in
                                              ("levels", "logp_old", "advantage")}}, 0.2)
    assert aux["clip_frac"] == 0
    np.testing.assert_allclose(loss, -rollout["advantage"].mean(), atol=1e-6)


def toy_pairs(n: int, seed: int):
    """Two user types: aspect 0 decides type 0's preferences, aspect 1 type 1's; the other
    aspects are noise, so no single weight vector ranks both types well."""
    rng = np.random.default_rng(seed)
    group = rng.integers(2, size=n)
    x = np.eye(2, dtype=np.float32)[group]
    ev_i = rng.random((n, 3)).astype(np.float32)
    ev_j = rng.random((n, 3)).astype(np.float32)
    ev_i[np.arange(n), group] = 0.5 + 0.5 * rng.random(n)
    ev_j[np.arange(n), group] = 0.5 * rng.random(n)
    ev_i[: n // 4, 2] = NAN  # some pairs lack the noise aspect 2 for one item
    return x, ev_i, ev_j


FIT = FitOptions(num_batches=60, batch_size=128, updates_per_batch=2, learning_rate=1e-2)


def test_grpo_learns_the_deciding_aspect_per_user():
    x, ev_i, ev_j = toy_pairs(2048, 0)
    x_t, ev_i_t, ev_j_t = toy_pairs(1024, 1)
    policy, log = train_aggregator(x, ev_i, ev_j, GrpoOptions(group_size=8, fit=FIT), seed=0)
    assert all(np.isfinite(h["loss"]) for h in log)
    uniform = pair_auc(np.full(3, 1 / 3), ev_i_t, ev_j_t)
    learned = pair_auc(np.asarray(policy.weights(jnp.asarray(x_t))), ev_i_t, ev_j_t)
    assert uniform < 0.85 and learned > 0.97, (uniform, learned)
    w = np.asarray(policy.weights(jnp.eye(2)))
    assert w[0, 0] > 0.6 and w[1, 1] > 0.6, w  # user-conditional
    assert log[-1]["reward_mean"] > log[0]["reward_mean"]


def test_bradley_terry_learns_the_deciding_aspect_per_user():
    x, ev_i, ev_j = toy_pairs(2048, 0)
    x_t, ev_i_t, ev_j_t = toy_pairs(1024, 1)
    head, log = train_bradley_terry(
        x, ev_i, ev_j, BradleyTerryOptions(fit=FitOptions(num_batches=60, batch_size=128,
                                                          learning_rate=1e-2)), seed=0)
    uniform = pair_auc(np.full(3, 1 / 3), ev_i_t, ev_j_t)
    learned = pair_auc(np.asarray(head.weights(jnp.asarray(x_t))), ev_i_t, ev_j_t)
    assert uniform < 0.85 and learned > 0.97, (uniform, learned)
    assert log[-1]["loss"] < log[0]["loss"]


def test_training_is_deterministic_and_rejects_incomparable_pairs():
    x, ev_i, ev_j = toy_pairs(256, 2)
    options = GrpoOptions(group_size=4, fit=FitOptions(num_batches=3, batch_size=64))
    a, _ = train_aggregator(x, ev_i, ev_j, options, seed=3)
    b, _ = train_aggregator(x, ev_i, ev_j, options, seed=3)
    np.testing.assert_array_equal(a.weights(jnp.asarray(x)), b.weights(jnp.asarray(x)))
    with pytest.raises(ValueError, match="no pair"):
        train_aggregator(x, np.full_like(ev_i, NAN), ev_j, options, seed=0)
