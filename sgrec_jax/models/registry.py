"""The SID generator registry and `build_model`.

    model = build_model("encoder_decoder", codes_nl=codes, level_sizes=(256, 256, 256, 3),
                        max_history=20, rngs=nnx.Rngs(0), num_layers=4, d_model=128)

A config names the variant and passes its sizes as a mapping (`**cfg.model.options`;
`MODELS.options(name)` gives the dict to start from, models/defaults.py the same without JAX).
Unknown option names fail with the valid ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from flax import nnx

from sgrec_jax.core.registry import Registry
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.models.options import ModelOptions

# Filled by sgrec_jax/registration.py, every variant with GENERATOR_OPTIONS (models/defaults.py).
MODELS: Registry[type[SidGenerator]] = Registry("model")


def parse_options(name: str, options: Mapping[str, Any]) -> ModelOptions:
    """The validated options of variant `name`: its defaults updated by `options`; unknown
    names raise a ValueError listing the valid ones."""
    return ModelOptions(**MODELS.resolve(name, options))


def build_model(
    name: str,
    *,
    codes_nl: np.ndarray,
    level_sizes: Sequence[int],
    max_history: int,
    rngs: nnx.Rngs,
    **sizes: Any,
) -> SidGenerator:
    """The generator variant `name` over the SID table codes_nl [N, L] (see ModelOptions)."""
    cls = MODELS.get(name)
    return cls(
        codes_nl=codes_nl,
        level_sizes=level_sizes,
        max_history=max_history,
        options=parse_options(name, sizes),
        rngs=rngs,
    )
