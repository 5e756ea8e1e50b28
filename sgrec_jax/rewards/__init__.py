"""Reward channels: business (hit, rank, ecpm), semantic (emb_cosine) and synthetic ground truth.

Importing the package registers every channel in REWARD_CHANNELS (the "psj" channel is
registered by the judge package). See channel.py for the interface.
"""

from sgrec_jax.rewards import business, ranking, semantic, truth  # noqa: F401  (registers)
from sgrec_jax.rewards.channel import (
    REWARD_CHANNELS,
    RewardChannel,
    RewardRequests,
    RewardSetup,
    build_channels,
    channel_options,
    register_channel,
    reward_tensor,
)

__all__ = [
    "REWARD_CHANNELS",
    "RewardChannel",
    "RewardRequests",
    "RewardSetup",
    "build_channels",
    "channel_options",
    "register_channel",
    "reward_tensor",
]
