"""RL alignment of the generator: reward mixing (advantage estimators) and its Pallas kernel."""

from sgrec_jax.rl.estimators import (
    ESTIMATORS,
    ChannelSpec,
    Estimator,
    build_estimator,
    channel_advantages,
    estimator_options,
)

__all__ = [
    "ESTIMATORS",
    "ChannelSpec",
    "Estimator",
    "build_estimator",
    "channel_advantages",
    "estimator_options",
]
