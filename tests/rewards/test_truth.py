"""The ground-truth channels equal SyntheticWorld's own numpy functions."""

import numpy as np
import pytest

from experiments.configs.common import base_config
from sgrec_jax.rewards.channel import RewardSetup, build_channels
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


def test_oracle_front_is_the_brute_force_best_lists(tiny_setup):
    """Per weight, every user's top-k by the scalarised mapped rewards, from the world's numpy."""
    from sgrec_jax.data.split import leave_one_out
    from sgrec_jax.rewards.truth import oracle_front

    world, dataset = tiny_setup.world(), tiny_setup.dataset
    business, relevance = build_channels(tiny_setup, ["true_business", "true_relevance"], {})
    test = leave_one_out(dataset, tiny_setup.config.data.max_history).test
    weights, k = np.array([0.0, 0.3, 1.0]), 3
    got = oracle_front((business, relevance), test, dataset.num_items, weights=weights, k=k,
                       batch_size=5)  # Batches of 5: the last one is padded.

    x_ud = world.interests_for_targets(test.user, test.target)
    items_un = np.broadcast_to(np.arange(dataset.num_items), (len(test), dataset.num_items))
    b_un = world.business_value(x_ud, items_un)
    r_un = world.semantic_relevance(x_ud, items_un)
    for w, (got_b, got_r) in zip(weights, got, strict=True):
        score = w * b_un / business.high + (1 - w) * r_un
        top = np.argsort(-score, axis=1)[:, :k]
        want_b = np.take_along_axis(b_un, top, 1).mean()
        want_r = np.take_along_axis(r_un, top, 1).mean()
        np.testing.assert_allclose([got_b, got_r], [want_b, want_r], rtol=1e-4)
    # The ends are the single-objective optima: nothing beats them on their own objective.
    assert got[-1, 0] >= got[:, 0].max() - 1e-6 and got[0, 1] >= got[:, 1].max() - 1e-6
    assert got[-1, 0] > got[0, 0] and got[0, 1] > got[-1, 1]
