"""The ground-truth channels equal SyntheticWorld's own numpy functions."""

import numpy as np
import pytest

from experiments.configs.common import base_config
from sgrec_jax.rewards import RewardSetup, build_channels
from tests.rewards.tiny import requests_and_items, score

NAMES = ["true_business", "true_ctr", "true_relevance"]


def test_truth_channels_match_the_world(tiny_setup):
    world = tiny_setup.world()
    channels = build_channels(tiny_setup, NAMES, {})
    requests, items = requests_and_items(tiny_setup)
    x_bd = world.interests_for_targets(np.asarray(requests.user_b), np.asarray(requests.target_b))
    real = items != -1
    safe = np.where(real, items, 0)
    want = {
        "true_business": world.business_value(x_bd, safe),
        "true_ctr": world.true_ctr(x_bd, safe),
        "true_relevance": world.semantic_relevance(x_bd, safe),
    }
    for channel in channels:
        out = score(channel, requests, items)
        np.testing.assert_allclose(out[real], want[channel.name][real], rtol=2e-5, atol=1e-6)
        assert np.isnan(out[~real]).all()
        assert channel.low <= out[real].min() and out[real].max() <= channel.high


def test_a_target_the_user_never_chose_is_nan(tiny_setup):
    (channel,) = build_channels(tiny_setup, ["true_relevance"], {})
    requests, items = requests_and_items(tiny_setup)
    never = np.setdiff1d(np.arange(tiny_setup.dataset.num_items),
                         tiny_setup.dataset.sequences[int(requests.user_b[0])])[0]
    requests = requests.replace(target_b=requests.target_b.at[0].set(never))
    out = score(channel, requests, items)
    assert np.isnan(out[0]).all() and np.isfinite(out[1, :-1]).all()


def test_truth_needs_the_synthetic_world(tiny_setup):
    config = base_config()
    config.data.format = "letter"
    setup = RewardSetup(config, tiny_setup.dataset, tiny_setup.workdir, seed=0)
    with pytest.raises(ValueError, match="synthetic"):
        build_channels(setup, ["true_ctr"], {})


def test_world_must_match_the_dataset(tiny_setup):
    config = tiny_setup.config.copy_and_resolve_references()
    config.data.bid_seed = 1
    setup = RewardSetup(config, tiny_setup.dataset, tiny_setup.workdir, seed=0)
    with pytest.raises(ValueError, match="does not match"):
        setup.world()
