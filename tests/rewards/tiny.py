"""The tiny synthetic world the reward tests share, and helpers to query it."""

import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import ConfigDict

from experiments.configs.common import base_config
from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from sgrec_jax.rewards.channel import RewardChannel, RewardRequests, RewardSetup

NUM_ITEMS = 150

# Small enough to train in seconds on a busy CPU; good enough for AUC > 0.6 on the tiny world.
CTR_TEST_OPTIONS = dict(ctr_steps=200, batch_size=64, eval_every=200, warmup_steps=20, d_model=16,
                        num_layers=1)


def tiny_config(**world) -> ConfigDict:
    config = base_config()
    config.data.format = "synthetic"
    config.data.options = ConfigDict(
        dict(num_items=NUM_ITEMS, num_users=300, branching=(2, 2, 2), latent_dim=8, **world)
    )
    config.sid.embeddings.dim = 16
    config.sid.embeddings.options.vocab_size = 200
    return config


def requests_and_items(setup: RewardSetup, group: int = 6) -> tuple[RewardRequests, np.ndarray]:
    """Test-split requests and random candidates [B, group]: the target in slot 0, padding in
    the last slot of every other request."""
    examples = leave_one_out(setup.dataset).test
    rng = np.random.default_rng(0)
    items = rng.integers(0, setup.dataset.num_items, (len(examples), group)).astype(np.int32)
    items[:, 0] = examples.target
    items[::2, -1] = PAD_ITEM
    return RewardRequests.from_examples(examples), items


@jax.jit
def _call(channel: RewardChannel, requests: RewardRequests, items_bg: jax.Array) -> jax.Array:
    return channel(requests, items_bg, jnp.zeros(items_bg.shape))


def score(channel: RewardChannel, requests: RewardRequests, items: np.ndarray) -> np.ndarray:
    """float32 [B, G] the channel's rewards (jitted: eager model code is slow on a busy CPU)."""
    return np.asarray(_call(channel, requests, jnp.asarray(items)))
