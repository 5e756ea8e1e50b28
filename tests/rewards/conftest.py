"""Session fixtures: the tiny world as a RewardSetup and its trained "ecpm" pCTR model."""

import pytest

from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardSetup
from sgrec_jax.rewards.ctr_model import build_ctr_model
from sgrec_jax.stages.pipeline import load_configured_dataset
from tests.rewards.tiny import CTR_TEST_OPTIONS, tiny_config


@pytest.fixture(scope="session")
def tiny_setup(tmp_path_factory) -> RewardSetup:
    config = tiny_config()
    return RewardSetup(config, load_configured_dataset(config),
                       str(tmp_path_factory.mktemp("rewards")), seed=0)


@pytest.fixture(scope="session")
def tiny_ctr(tiny_setup):
    """The tiny world's "ecpm" pCTR model, trained on first use (cached in tiny_setup's dir)."""
    return build_ctr_model(tiny_setup, "ecpm", REWARD_CHANNELS.resolve("ecpm", CTR_TEST_OPTIONS))
