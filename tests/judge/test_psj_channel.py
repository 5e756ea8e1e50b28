"""The "psj" reward channel on the tiny world: range, NaN rules, jit, caching, the options, and
learning from a stage-1 evidence store."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from sgrec_jax.judge.context import context_tables, features_of
from sgrec_jax.judge.distill import agreement, predict_rows
from sgrec_jax.judge.features import feature_aspects, feature_tables
from sgrec_jax.judge.holistic import holistic_score
from sgrec_jax.judge.pairs import store_requests
from sgrec_jax.judge.psj_channel import psj_models
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardRequests, RewardSetup, build_channels
from sgrec_jax.stages.pipeline import load_configured_dataset
from tests.rewards.tiny import requests_and_items, tiny_config

FAST = {"num_batches": 6, "group_size": 4, "distill_batches": 6, "negatives": ("random",)}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> RewardSetup:
    config = tiny_config()
    return RewardSetup(config, load_configured_dataset(config),
                       str(tmp_path_factory.mktemp("psj")), seed=0)


@pytest.fixture(scope="module")
def batch(setup):
    _, items = requests_and_items(setup)
    n = 16
    judged = np.arange(n) % 4 != 3
    examples = leave_one_out(setup.dataset).test
    sub = type(examples)(examples.history[:n], examples.target[:n], examples.user[:n])
    return (RewardRequests.from_examples(sub, judged_b=judged), jnp.asarray(items[:n]),
            jnp.zeros(items[:n].shape, jnp.float32), judged)


def score(channel, batch):
    requests, items, logprob, _ = batch
    return np.asarray(jax.jit(lambda c, r, i, lp: c(r, i, lp))(channel, requests, items, logprob))


def check_rewards(r_bg, batch):
    _, items, _, judged = batch
    pad = np.asarray(items) == PAD_ITEM
    assert np.isnan(r_bg[~judged]).all()
    assert np.isnan(r_bg[pad]).all()
    live = r_bg[judged[:, None] & ~pad]
    assert np.isfinite(live).all() and (live >= 0).all() and (live <= 1).all()
    assert live.std() > 0


def test_registered_with_options():
    assert "psj" in REWARD_CHANNELS
    options = REWARD_CHANNELS.options("psj")
    assert options["evidence"] == "features" and options["aggregator"] == "grpo"


def test_grpo_channel_scores_caches_and_restores(setup, batch):
    [channel] = build_channels(setup, ["psj"], {"psj": FAST})
    assert (channel.name, channel.kind, channel.low, channel.high) == ("psj", "semantic", 0, 1)
    r_bg = score(channel, batch)
    check_rewards(r_bg, batch)
    requests, items, logprob, _ = batch
    np.testing.assert_allclose(channel(requests, items, logprob), r_bg, rtol=1e-5)
    folder = os.path.join(setup.workdir, "judge", "aggregator")
    [cached] = os.listdir(folder)
    assert cached.startswith("grpo_") and cached.endswith(".npz")
    mtime = os.path.getmtime(os.path.join(folder, cached))
    [again] = build_channels(setup, ["psj"], {"psj": FAST})
    np.testing.assert_array_equal(score(again, batch), r_bg)
    assert os.path.getmtime(os.path.join(folder, cached)) == mtime  # restored, not retrained


def test_uniform_features_channel_is_the_mean_of_present_aspects(setup, batch):
    [channel] = build_channels(setup, ["psj"], {"psj": {**FAST, "aggregator": "uniform"}})
    r_bg = score(channel, batch)
    check_rewards(r_bg, batch)
    requests, items, _, judged = batch
    ev = feature_aspects(feature_tables(setup.dataset, setup.text_embeddings()), requests, items)
    want = np.asarray(holistic_score(jnp.full(3, 1 / 3), ev))
    np.testing.assert_allclose(r_bg[judged], want[judged], rtol=1e-5)


def test_distilled_evidence_channel(setup, batch):
    options = {**FAST, "aggregator": "uniform", "evidence": "distilled"}
    [channel] = build_channels(setup, ["psj"], {"psj": options})
    check_rewards(score(channel, batch), batch)
    assert os.listdir(os.path.join(setup.workdir, "judge", "scorer"))


def write_store(setup, path, negatives=3, noise=0.05):
    """A stage-1 store as experiments/judge.py writes one: a sampled training request per user,
    its target and `negatives` items outside the user's sequence, judged by the feature backend
    plus noise (a stand-in for an LLM that mostly agrees), some aspects missing."""
    data = setup.dataset
    train = leave_one_out(data, max_history=setup.config.data.max_history).train
    rng = np.random.default_rng(0)
    rows = np.array([rng.choice(np.flatnonzero(train.user == u)) for u in range(data.num_users)])
    items = np.empty((len(rows), 1 + negatives), np.int32)
    items[:, 0] = train.target[rows]
    for k, r in enumerate(rows):
        outside = np.setdiff1d(np.arange(data.num_items), data.sequences[train.user[r]])
        items[k, 1:] = rng.choice(outside, negatives, replace=False)
    sample = type(train)(train.history[rows], train.target[rows], train.user[rows])
    tables = feature_tables(data, setup.text_embeddings())
    evidence = np.asarray(jax.jit(feature_aspects)(tables, RewardRequests.from_examples(sample),
                                                   jnp.asarray(items)))
    evidence = np.clip(evidence + rng.normal(0, noise, evidence.shape), 0, 1)
    evidence[rng.random(evidence.shape) < 0.1] = np.nan
    users = np.repeat(sample.user, items.shape[1])
    EvidenceStore(users, items.reshape(-1), evidence.reshape(len(users), -1),
                  source="features + noise (test)").save(path)
    return path


def test_channel_learns_from_an_evidence_store(setup, batch, tmp_path):
    path = write_store(setup, tmp_path / "evidence.npz")
    options = {**FAST, "evidence": "distilled", "evidence_store": str(path),
               "distill_batches": 150}
    setup = RewardSetup(setup.config, setup.dataset, str(tmp_path / "work"), seed=0)
    [channel] = build_channels(setup, ["psj"], {"psj": options})
    check_rewards(score(channel, batch), batch)  # jitted, every candidate scored
    for folder, name in (("aggregator", "grpo_"), ("scorer", "distilled_")):
        [cached] = os.listdir(os.path.join(setup.workdir, "judge", folder))
        assert cached.startswith(name)

    # The scorer reproduces the stored evidence (the rows it was trained on) far better than
    # the stored mean does.
    store = EvidenceStore.load(path)
    _, scorer = psj_models(setup, {**REWARD_CHANNELS.options("psj"), **options})
    train = leave_one_out(setup.dataset, max_history=setup.config.data.max_history).train
    request = store_requests(store, setup.dataset, train)
    assert (request >= 0).all()
    emb = setup.text_embeddings()
    x = features_of(context_tables(setup.dataset, emb), train.history[request])
    pred = predict_rows(scorer, x, store.items_n, emb)
    out = agreement(pred, store.evidence_na)
    mean = agreement(np.broadcast_to(np.nanmean(store.evidence_na, axis=0), pred.shape),
                     store.evidence_na)
    print("distilled vs store:", out, "stored mean:", mean)
    # The noise (sd 0.05) alone costs a mean absolute error of 0.04.
    assert out["mae/profile"] < 0.7 * mean["mae/profile"], (out, mean)
    assert out["spearman/holistic"] > 0.5, out

    with pytest.raises(ValueError, match="evidence_store needs evidence='distilled'"):
        build_channels(setup, ["psj"], {"psj": {**FAST, "evidence_store": str(path)}})
    with pytest.raises(DataFormatError, match="missing.npz"):
        build_channels(setup, ["psj"], {"psj": {**options, "evidence_store": str(
            tmp_path / "missing.npz")}})


def test_bad_options_fail(setup):
    with pytest.raises(ValueError, match="aggregator must be one of"):
        build_channels(setup, ["psj"], {"psj": {"aggregator": "mean"}})
    with pytest.raises(ValueError, match="negatives"):
        build_channels(setup, ["psj"], {"psj": {"negatives": ("farthest",)}})


def test_psj_feature_evidence_reads_sentence_encoder_embeddings(setup, batch, minilm_cache):
    """text_source="sentence_encoder": context and feature tables hold the model's encodings."""
    options = {"psj": {"text_source": "sentence_encoder", "aggregator": "uniform",
                       "evidence": "features"}}
    (channel,) = build_channels(setup, ["psj"], options)
    want_nd = setup.text_embeddings(source="sentence_encoder")
    assert want_nd.shape == (setup.dataset.num_items, 384)
    # feature_tables normalises the (already unit-norm) rows once more: equal up to rounding.
    np.testing.assert_allclose(np.asarray(channel.tables["features"].item_nd), want_nd, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(channel.tables["context"].emb_nd), want_nd)
    check_rewards(score(channel, batch), batch)
