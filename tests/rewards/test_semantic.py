"""emb_cosine: range, the target scores 1, and its embeddings are cached."""

import os

import numpy as np

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
