"""Generator options and transforms: bfloat16 compute, split/merge + jax.jit, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.models.layers import NEG_INF
from sgrec_jax.models.registry import MODELS
from tests.models.tiny import L, batch, forward, tiny


@pytest.mark.parametrize("variant", MODELS.names())
def test_bfloat16_compute_gives_float32_logits_close_to_float32(variant):
    history, mask, target = batch()
    f32 = np.asarray(forward(tiny(variant, "item"), history, mask, target))
    m = tiny(variant, "item", dtype="bfloat16")
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m, nnx.Param)))
    memory = jax.eval_shape(lambda: m.encode(history, mask))
    assert memory.keys[0].dtype == jnp.bfloat16
    bf16 = forward(m, history, mask, target)
    assert bf16.dtype == jnp.float32
    valid = f32 > NEG_INF / 2
    np.testing.assert_array_equal(np.asarray(bf16) > NEG_INF / 2, valid)
    err = np.abs(np.asarray(bf16) - f32)[valid]
    assert err.max() < 0.05 * np.abs(f32[valid]).max()


def test_split_merge_jax_jit_matches_nnx_jit():
    """How beam search and RL hold the model: one graphdef, the state as a jitted argument."""
    m = tiny("encoder_decoder", "code")
    history, mask, target = batch()
    expected = forward(m, history, mask, target)
    graphdef, state = nnx.split(m)
    encode = jax.jit(lambda s, h, mk: nnx.merge(graphdef, s).encode(h, mk))
    step = jax.jit(
        lambda s, mem, p, level: nnx.merge(graphdef, s).decode_logits(mem, p, level),
        static_argnums=3,
    )
    memory = encode(state, history, mask)
    assert memory.mask_bs.shape == (3, 5 * L)  # "code": one token per code
    for level in (0, L - 1):
        np.testing.assert_allclose(
            step(state, memory, target[:, None], level)[:, 0], expected[:, level], atol=1e-5
        )


@nnx.jit
def train_forward(m, history, mask, target):
    return m(history, mask, target, deterministic=False)


def test_dropout_is_seeded_and_only_active_when_not_deterministic():
    history, mask, target = batch()
    a, b = (tiny("decoder_only", "item", dropout=0.5) for _ in range(2))
    first = train_forward(a, history, mask, target)
    np.testing.assert_array_equal(train_forward(b, history, mask, target), first)
    again = train_forward(a, history, mask, target)  # the dropout stream has moved on
    assert np.abs(np.asarray(again - first)).max() > 1e-3
    det = forward(a, history, mask, target)
    assert np.abs(np.asarray(first - det)).max() > 1e-3
    np.testing.assert_array_equal(forward(a, history, mask, target), det)


@pytest.mark.parametrize("variant", MODELS.names())
def test_head_dim_is_independent_of_d_model(variant):
    """T5's d_kv: 3 heads x 8 at d_model 16 (not divisible) builds, and incremental decoding
    with its [.., heads, head_dim] cache equals teacher forcing."""
    from sgrec_jax.models.registry import parse_options

    with pytest.raises(ValueError, match="divisible"):
        parse_options(variant, dict(d_model=16, num_heads=3))
    m = tiny(variant, "item", num_heads=3, head_dim=8)
    history, mask, target = batch()
    teacher = forward(m, history, mask, target)

    @nnx.jit
    def incremental(m, history, mask, target):
        memory = m.encode(history, mask)
        cache = m.start_decoding(memory, 1)
        codes = target[:, None]
        out = []
        for level in range(L):
            logits, cache = m.decode_step(memory, cache, codes, level)
            out.append(logits[:, 0])
        return jnp.stack(out, 1), cache

    steps, cache = incremental(m, history, mask, target)
    assert cache[0].k.shape[-2:] == (3, 8)
    np.testing.assert_allclose(np.asarray(steps), np.asarray(teacher), atol=2e-5)
