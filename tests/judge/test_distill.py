"""The distilled aspect scorer: masked loss, learning feature evidence, agreement, param files."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from sgrec_jax.judge.context import context_tables, features_of
from sgrec_jax.judge.distill import (
    DistilledScorer,
    DistillOptions,
    agreement,
    distilled_aspects,
    evidence_rows,
    masked_mse,
    predict_rows,
    train_distilled,
)
from sgrec_jax.judge.features import feature_aspects, feature_tables
from sgrec_jax.judge.fitting import FitOptions, restore_params, save_params
from sgrec_jax.judge.pairs import held_out_users, log_pairs, pair_evidence
from tests.judge.test_pairs import EMB, make_dataset

NAN = np.nan


def test_masked_mse_ignores_missing_entries():
    pred = jnp.array([[0.5, 0.5], [0.2, 0.9]])
    evidence = jnp.array([[1.0, NAN], [0.0, NAN]])
    np.testing.assert_allclose(masked_mse(pred, evidence), (0.25 + 0.04) / 2, rtol=1e-6)
    grad = jax.grad(masked_mse)(pred, evidence)
    assert np.isfinite(grad).all() and (grad[:, 1] == 0).all()


def test_agreement_hand_worked():
    pred = np.array([[0.5, 0.1], [0.7, 0.2], [0.9, 0.9]], np.float32)
    evidence = np.array([[0.4, NAN], [0.8, NAN], [1.0, 0.5]], np.float32)
    out = agreement(pred, evidence)
    assert out["mae/profile"] == pytest.approx(0.1, abs=1e-6)
    assert out["mae/future"] == pytest.approx(0.4, abs=1e-6)
    # Holistic scores on the evidence's aspects: pred (0.5, 0.7, 0.9), evidence (0.4, 0.8, 0.75).
    assert out["spearman/holistic"] == pytest.approx(0.5)
    assert out["rows"] == 3


@pytest.fixture(scope="module")
def trained():
    data = make_dataset(num_users=240, seed=3)
    ctx = context_tables(data, EMB)
    pairs = log_pairs(data, leave_one_out(data, max_history=4).train, negative="random", seed=0)
    ev_i, ev_j = pair_evidence(pairs, functools.partial(feature_aspects,
                                                        feature_tables(data, EMB)))
    x = features_of(ctx, pairs.history)
    held = held_out_users(data.num_users, 0.25, seed=0)[pairs.user]
    rows = {name: evidence_rows(x[mask], pairs.item_i[mask], pairs.item_j[mask], ev_i[mask],
                                ev_j[mask]) for name, mask in (("train", ~held), ("test", held))}
    options = DistillOptions(hidden=64, fit=FitOptions(num_batches=150, batch_size=128,
                                                       learning_rate=1e-2))
    scorer, log = train_distilled(*rows["train"], EMB, options, seed=0)
    return ctx, scorer, log, rows


def test_scorer_learns_feature_evidence_on_held_out_users(trained):
    _, scorer, log, rows = trained
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    x, items, evidence = rows["test"]
    pred = predict_rows(scorer, x, items, EMB, batch_size=100)
    out = agreement(pred, evidence)
    train_mean = np.nanmean(rows["train"][2], axis=0)
    baseline = agreement(np.broadcast_to(train_mean, evidence.shape), evidence)
    assert out["mae/profile"] < 0.6 * baseline["mae/profile"], (out, baseline)
    # Profile is a function of (mean history, item), which the scorer sees; future and novelty
    # need more than x, so the holistic score agrees less, but still clearly.
    profile_only = np.broadcast_to(np.eye(3, dtype=np.float32)[0], evidence.shape)
    assert agreement(pred, evidence, profile_only)["spearman/holistic"] > 0.9
    assert out["spearman/holistic"] > 0.4, out
    assert ((pred >= 0) & (pred <= 1)).all()


def test_distilled_aspects_is_jittable_and_nan_for_padding(trained):
    ctx, scorer, _, rows = trained
    x, items, _ = rows["test"]
    items_bg = np.stack([items[:4], np.full(4, PAD_ITEM)], axis=1).astype(np.int32)
    fn = nnx.jit(lambda s, x, items: distilled_aspects(s, x, ctx.emb_nd, items))
    ev = np.asarray(fn(scorer, jnp.asarray(x[:4]), jnp.asarray(items_bg)))
    assert ev.shape == (4, 2, 3) and np.isnan(ev[:, 1]).all()
    np.testing.assert_allclose(ev[:, 0], predict_rows(scorer, x[:4], items[:4], EMB), rtol=1e-5)


def test_params_round_trip(tmp_path, trained):
    _, scorer, _, rows = trained
    path = tmp_path / "scorer.npz"
    save_params(path, scorer)
    fresh = DistilledScorer(scorer.norm.num_features - 2 * EMB.shape[1], EMB.shape[1],
                            hidden=64, rngs=nnx.Rngs(9))
    restored = restore_params(path, fresh)
    x, items, _ = rows["test"]
    np.testing.assert_array_equal(predict_rows(restored, x, items, EMB),
                                  predict_rows(scorer, x, items, EMB))
    wrong = DistilledScorer(fresh.norm.num_features - 2 * EMB.shape[1], EMB.shape[1], hidden=32,
                            rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="do not match"):
        restore_params(path, wrong)
