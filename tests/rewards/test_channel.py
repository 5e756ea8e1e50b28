"""The channel interface: registry, options, build_channels and reward_tensor."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.rewards.channel import (
    REWARD_CHANNELS,
    RewardChannel,
    RewardRequests,
    build_channels,
    reward_tensor,
)
from tests.rewards.tiny import requests_and_items

EXPECTED = {"hit", "rank", "ecpm", "ecpm_eval", "emb_cosine", "true_business", "true_ctr",
            "true_relevance"}


def test_every_channel_is_registered():
    assert EXPECTED <= set(REWARD_CHANNELS.names())


def test_unknown_channel_lists_valid_names(tiny_setup):
    with pytest.raises(UnknownNameError, match="valid names: .*ecpm.*hit.*rank"):
        build_channels(tiny_setup, ["hit", "ctr"], {})
    with pytest.raises(UnknownNameError, match="emb_cosine"):
        REWARD_CHANNELS.options("nope")


def test_unknown_option_lists_valid_options(tiny_setup):
    with pytest.raises(ValueError, match="ctr_step.*valid options: .*ctr_steps"):
        build_channels(tiny_setup, ["ecpm"], {"ecpm": {"ctr_step": 5}})
    with pytest.raises(ValueError, match="listed twice"):
        build_channels(tiny_setup, ["hit", "hit"], {})


def test_options_expose_defaults():
    assert REWARD_CHANNELS.options("ecpm")["architecture"] == "sasrec"
    eval_options = REWARD_CHANNELS.options("ecpm_eval")
    assert eval_options["architecture"] != "sasrec"
    assert eval_options["seed_offset"] != REWARD_CHANNELS.options("ecpm")["seed_offset"]
    assert REWARD_CHANNELS.options("hit") == {}


def test_reward_tensor_stacks_channels_under_jit(tiny_setup):
    channels = build_channels(tiny_setup, ["hit", "rank", "true_ctr"], {"hit": {}})
    requests, items = requests_and_items(tiny_setup)
    logprob = -jnp.arange(items.shape[1], dtype=jnp.float32)[None].repeat(len(items), 0)
    eager = reward_tensor(channels, requests, jnp.asarray(items), logprob)
    jitted = jax.jit(reward_tensor)(channels, requests, jnp.asarray(items), logprob)
    assert jitted.shape == (len(items), items.shape[1], 3) and jitted.dtype == jnp.float32
    np.testing.assert_allclose(jitted, eager, rtol=1e-6)
    np.testing.assert_array_equal(np.isnan(jitted), (items == -1)[..., None].repeat(3, -1))
    np.testing.assert_array_equal(jitted[:, 0, 0], 1.0)  # Slot 0 holds the target.


def test_channel_is_a_pytree_of_its_tables_only(tiny_setup):
    (channel,) = build_channels(tiny_setup, ["true_relevance"], {})
    assert len(jax.tree.leaves(channel)) == len(jax.tree.leaves(channel.tables))
    with pytest.raises(ValueError, match="kind"):
        RewardChannel("x", 0.0, 1.0, "money", {}, channel.score_fn)
    with pytest.raises(ValueError, match="low < high"):
        RewardChannel("x", 1.0, 1.0, "truth", {}, channel.score_fn)


def test_requests_from_examples(tiny_setup):
    examples = leave_one_out(tiny_setup.dataset).valid
    requests = RewardRequests.from_examples(examples)
    assert requests.history_bh.shape == examples.history.shape
    assert bool(requests.judged_b.all())
    np.testing.assert_array_equal(requests.history_mask_bh, examples.history != -1)
    with pytest.raises(ValueError, match="judged_b"):
        RewardRequests.from_examples(examples, judged_b=np.ones(3, bool))
