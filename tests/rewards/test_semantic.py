"""emb_cosine: range, the target scores 1, its embeddings are cached, and it reads the
sentence encoder's embeddings when asked or when the SIDs do."""

import copy
import os

import numpy as np
import pytest

from experiments.configs import common
from sgrec_jax.embeddings import item_embeddings
from sgrec_jax.rewards.channel import RewardSetup, build_channels
from tests.rewards.tiny import requests_and_items, score


def test_emb_cosine_range_and_target_is_one(tiny_setup):
    (channel,) = build_channels(tiny_setup, ["emb_cosine"], {})
    requests, items = requests_and_items(tiny_setup)
    out = score(channel, requests, items)
    assert (channel.low, channel.high) == (-1.0, 1.0)
    np.testing.assert_allclose(out[:, 0], 1.0, atol=1e-5)
    real = items != -1
    assert np.isnan(out[~real]).all() and np.isfinite(out[real]).all()
    assert out[real].min() >= -1.0 and out[real].max() <= 1.0
    assert out[real].std() > 0.05  # Not a constant.


def test_text_embeddings_are_unit_norm_and_cached(tiny_setup):
    x_nd = tiny_setup.text_embeddings()
    assert x_nd.shape == (tiny_setup.dataset.num_items, tiny_setup.config.sid.embeddings.dim)
    np.testing.assert_allclose(np.linalg.norm(x_nd, axis=1), 1.0, rtol=1e-5)
    cached = [f for f in os.listdir(tiny_setup.rewards_dir) if f.startswith("text_emb_")]
    assert any(f.endswith(".npy") for f in cached)
    fresh = RewardSetup(tiny_setup.config, tiny_setup.dataset, tiny_setup.workdir, seed=0)
    np.testing.assert_array_equal(fresh.text_embeddings(), x_nd)  # Read back from the file.
    assert fresh.text_embeddings(dim=8).shape[1] == 8


def test_emb_cosine_reads_sentence_encoder_embeddings(tiny_setup, minilm_cache):
    """text_source="sentence_encoder": the channel's table is the model's 384-d encoding."""
    (channel,) = build_channels(tiny_setup, ["emb_cosine"],
                                {"emb_cosine": {"text_source": "sentence_encoder"}})
    want_nd = item_embeddings("sentence_encoder", tiny_setup.dataset, dim=None, seed=0)
    np.testing.assert_allclose(np.asarray(channel.tables), want_nd, atol=1e-6)
    requests, items = requests_and_items(tiny_setup)
    out = score(channel, requests, items)
    np.testing.assert_allclose(out[:, 0], 1.0, atol=1e-5)
    # A separate cache file from the "text" embeddings of the other tests.
    assert tiny_setup.text_embeddings().shape[1] == tiny_setup.config.sid.embeddings.dim


def test_semantic_channels_follow_sentence_encoder_sids(tiny_setup, minilm_cache):
    """With SIDs built from the sentence encoder, text_embeddings() defaults to its space."""
    config = copy.deepcopy(tiny_setup.config)
    common.set_embeddings(config, "sentence_encoder", 8)
    setup = RewardSetup(config, tiny_setup.dataset, tiny_setup.workdir, seed=0)
    assert setup.text_source() == "sentence_encoder"
    x_nd = setup.text_embeddings()
    assert x_nd.shape == (tiny_setup.dataset.num_items, 8)  # The SIDs' width (projected).
    np.testing.assert_allclose(
        x_nd, item_embeddings("sentence_encoder", tiny_setup.dataset, dim=8, seed=0), atol=1e-6)
    # "text" is still there on request, with its own defaults (not the SIDs' settings).
    assert setup.text_embeddings(source="text", vocab_size=200).shape[1] == 64
    np.testing.assert_array_equal(setup.text_embeddings(source="text", dim=16, vocab_size=200),
                                  tiny_setup.text_embeddings(dim=16))
    with pytest.raises(ValueError, match="text embedding source must be one of"):
        setup.text_embeddings(source="collaborative")
