"""A tiny SID table, batch and model builder shared by the model tests."""

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.models.history import HISTORY_ENCODINGS
from sgrec_jax.models.registry import MODELS, build_model

SIZES = (6, 5, 7, 2)  # unequal, so every level but one has padded logits
V = max(SIZES)
L = len(SIZES)
NUM_ITEMS, H = 40, 5
VARIANTS = [(m, e) for m in MODELS.names() for e in HISTORY_ENCODINGS.names()]
SIZE_OPTIONS = dict(num_layers=2, d_model=16, num_heads=2, d_ff=32)


def _codes() -> np.ndarray:
    """NUM_ITEMS distinct SIDs drawn from the SIZES grid."""
    flat = np.random.default_rng(0).choice(np.prod(SIZES), NUM_ITEMS, replace=False)
    return np.stack(np.unravel_index(flat, SIZES), axis=1).astype(np.int32)


CODES = _codes()


def tiny(variant: str, encoding: str, seed: int = 0, **options) -> SidGenerator:
    """A small model, initialised under jit: one compile (persistently cached) instead of one
    per initializer shape in eager mode."""
    return nnx.jit(
        lambda: build_model(
            variant,
            codes_nl=CODES,
            level_sizes=SIZES,
            max_history=H,
            rngs=nnx.Rngs(seed),
            history_encoding=encoding,
            **(SIZE_OPTIONS | options),
        )
    )()


def random_transitions(seed: int = 0, num_pairs: int = 300) -> TransitionCounts:
    """Repeated random pairs over the NUM_ITEMS catalog: most items get several successors,
    some with counts > 1."""
    rng = np.random.default_rng(seed)
    return TransitionCounts.from_pairs(rng.integers(0, NUM_ITEMS, num_pairs),
                                       rng.integers(0, NUM_ITEMS, num_pairs), NUM_ITEMS)


def tiny_with_memory(variant: str, encoding: str, seed: int = 0, k: int = 3, window: int = 2,
                     **options) -> SidGenerator:
    """`tiny` with a transition memory of k successors of the last `window` items, loaded
    with `random_transitions`."""
    model = tiny(variant, encoding, seed, transition_memory=k, transition_memory_window=window,
                 **options)
    model.transition_memory.load(random_transitions(seed))
    return model


def tiny_over(sids, max_history: int, seed: int = 0) -> SidGenerator:
    """A 1-layer encoder-decoder (d 16) over `sids` (a SemanticIds), initialised under jit: the
    model of the serving and fusion tests, which need a real catalog rather than CODES."""
    return nnx.jit(
        lambda: build_model(
            "encoder_decoder", codes_nl=sids.codes_nl, level_sizes=sids.level_sizes,
            max_history=max_history, rngs=nnx.Rngs(seed), num_layers=1, d_model=16, num_heads=2,
            d_ff=32,
        )
    )()


def batch(seed: int = 1, size: int = 3) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(history [size, H] with 2, 0, 4, 2, 0, ... padded slots, its mask, target codes)."""
    rng = np.random.default_rng(seed)
    history = rng.integers(0, NUM_ITEMS, (size, H)).astype(np.int32)
    pads = np.resize([2, 0, 4], size)
    mask = np.arange(H)[None] >= pads[:, None]
    history[~mask] = -1
    target = rng.integers(0, NUM_ITEMS, size)
    return jnp.asarray(history), jnp.asarray(mask), jnp.asarray(CODES[target])


@nnx.jit
def forward(m: SidGenerator, history, mask, target):
    return m(history, mask, target, deterministic=True)
