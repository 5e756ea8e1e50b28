"""The pCTR model: learns on a tiny world, is calibrated, and is trained once then cached."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.data.split import leave_one_out
from sgrec_jax.rewards.channel import REWARD_CHANNELS
from sgrec_jax.rewards.ctr_model import (
    CtrOptions,
    MeanPoolScorer,
    auc,
    build_ctr_model,
    expected_calibration_error,
    fit_platt,
    pctr_bg,
)
from tests.rewards.tiny import CTR_TEST_OPTIONS


def test_auc_by_hand():
    assert auc(np.array([0.9, 0.1, 0.8, 0.3]), np.array([1, 0, 1, 0])) == 1.0
    assert auc(np.array([0.1, 0.9, 0.5, 0.5]), np.array([1, 0, 1, 0])) == 0.125
    with pytest.raises(ValueError, match="positives and negatives"):
        auc(np.array([0.1, 0.2]), np.array([1, 1]))


def test_ece_by_hand():
    # Bin [0.2, 0.27): prob 0.25, labels {1, 0} -> |0.5 - 0.25| over 2 of 4; the 0.9s are exact.
    probs = np.array([0.25, 0.25, 0.9, 0.9])
    labels = np.array([1.0, 0.0, 1.0, 1.0])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.5 * 0.25 + 0.5 * 0.1)


def test_platt_recovers_a_known_calibration():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=20000) * 2
    labels = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(float)
    scale, bias = fit_platt(logits, labels)
    assert scale == pytest.approx(0.5, abs=0.05) and bias == pytest.approx(-1.0, abs=0.05)


def test_options_are_checked_before_work():
    with pytest.raises(ValueError, match="architecture"):
        CtrOptions(architecture="gru")
    with pytest.raises(ValueError, match="warmup_steps"):
        CtrOptions(ctr_steps=10, warmup_steps=10)


def test_mean_pool_scorer_shapes_and_padding():
    model = MeanPoolScorer(10, 4, d_model=8, dropout=0.1, rngs=nnx.Rngs(0))
    history = np.array([[-1, -1, 2, 3], [1, 2, 3, 4]], np.int32)

    @nnx.jit
    def forward(model, history, items):
        return model.click_logits(model.user_state(history, history != -1, deterministic=True),
                                  items)

    logits = forward(model, history, np.array([[1, -1], [5, 6]], np.int32))
    state = model.user_state(history, history != -1, deterministic=True)
    assert state.shape == (2, 8) and logits.shape == (2, 2) and float(logits[0, 1]) < -1e8
    with pytest.raises(ValueError, match="rng"):
        model.user_state(history, history != -1, deterministic=False)


def test_ctr_model_learns_and_is_cached(tiny_setup, tiny_ctr):
    assert tiny_ctr.trained
    report = tiny_ctr.report
    assert report["test_auc"] > 0.6, report
    assert 0.0 <= report["test_ece"] < 0.1, report
    assert report["test_positive_rate"] == pytest.approx(1 / 5, abs=0.01)  # 4 negatives.

    again = build_ctr_model(tiny_setup, "ecpm", REWARD_CHANNELS.resolve("ecpm", CTR_TEST_OPTIONS))
    assert not again.trained and again.report == report
    for a, b in zip(jax.tree.leaves(tiny_ctr.state), jax.tree.leaves(again.state), strict=True):
        np.testing.assert_array_equal(a, b)

    test = leave_one_out(tiny_setup.dataset).test
    items = np.stack([test.target, (test.target + 1) % tiny_setup.dataset.num_items], 1)
    pctr = jax.jit(pctr_bg, static_argnums=0)
    p = pctr(again.graphdef, again.state, again.scale, again.bias, test.history,
             test.history != -1, items)
    assert np.all((np.asarray(p) > 0) & (np.asarray(p) < 1))

    changed = REWARD_CHANNELS.resolve("ecpm", {**CTR_TEST_OPTIONS, "d_model": 8})
    with pytest.raises(ValueError, match="remove it or use another work directory"):
        build_ctr_model(tiny_setup, "ecpm", changed)


def test_options_dataclass_matches_channel_defaults():
    assert REWARD_CHANNELS.resolve("ecpm", {}) == dataclasses.asdict(CtrOptions())
