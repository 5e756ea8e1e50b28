import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.models.layers import (
    NEG_INF,
    KeysValues,
    LevelHead,
    Linear,
    Precision,
    SidTokens,
    attend,
    causal_mask,
)

B, K, T, S, HEADS, D = 2, 3, 4, 5, 2, 8
F32 = Precision(jnp.dtype(jnp.float32), jnp.dtype(jnp.float32))


def _normal(seed: int, shape: tuple[int, ...]) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), shape)


def _reference(q, k, v, mask):
    """Plain masked softmax attention, one (request, candidate, head) at a time."""
    out = np.zeros(q.shape, np.float32)
    for idx in np.ndindex(q.shape[0], q.shape[1]):
        for h in range(q.shape[3]):
            s = q[idx][:, h] @ k[idx][:, h].T / np.sqrt(q.shape[-1])
            s = np.where(mask[idx], s, -np.inf)
            w = np.exp(s - s.max(-1, keepdims=True))
            out[idx][:, h] = (w / w.sum(-1, keepdims=True)) @ v[idx][:, h]
    return out


def test_shared_and_own_blocks_equal_one_concatenated_block():
    q = _normal(0, (B, K, T, HEADS, D))
    shared_k, shared_v = _normal(1, (B, S, HEADS, D)), _normal(2, (B, S, HEADS, D))
    own_k, own_v = _normal(3, (B, K, T, HEADS, D)), _normal(4, (B, K, T, HEADS, D))
    history_mask = jnp.array([[True] * S, [False, False, True, True, True]])
    shared = KeysValues(shared_k, shared_v, history_mask[:, None, None, :])
    own = KeysValues(own_k, own_v, causal_mask(T))
    got = attend(q, [shared, own])

    k = np.concatenate([np.repeat(np.asarray(shared_k)[:, None], K, 1), own_k], axis=2)
    v = np.concatenate([np.repeat(np.asarray(shared_v)[:, None], K, 1), own_v], axis=2)
    mask = np.concatenate(
        [np.broadcast_to(history_mask[:, None, None, :], (B, K, T, S)),
         np.broadcast_to(causal_mask(T), (B, K, T, T))],
        axis=-1,
    )
    np.testing.assert_allclose(got, _reference(np.asarray(q), k, v, mask), atol=1e-5)


def test_masked_keys_do_not_matter_and_a_query_with_no_key_reads_zero():
    q = _normal(0, (1, 1, 2, HEADS, D))
    k, v = _normal(1, (1, S, HEADS, D)), _normal(2, (1, S, HEADS, D))
    mask = jnp.array([[True, True, False, False, False], [False] * S])[None, None]  # per query
    out = attend(q, [KeysValues(k, v, mask)])
    junk = attend(q, [KeysValues(k.at[:, 2:].set(1e4), v.at[:, 2:].set(-1e4), mask)])
    np.testing.assert_array_equal(junk, out)
    np.testing.assert_array_equal(out[0, 0, 1], 0.0)
    assert np.abs(np.asarray(out[0, 0, 0])).max() > 0


def test_attention_softmax_is_float32_under_bfloat16():
    q = _normal(0, (1, 1, T, HEADS, D))
    k, v = _normal(1, (1, S, HEADS, D)), _normal(2, (1, S, HEADS, D))
    mask = jnp.ones((1, 1, 1, S), bool)
    f32 = attend(q, [KeysValues(k, v, mask)])
    bf16 = attend(q.astype(jnp.bfloat16), [KeysValues(k.astype(jnp.bfloat16),
                                                      v.astype(jnp.bfloat16), mask)])
    assert bf16.dtype == jnp.bfloat16
    np.testing.assert_allclose(bf16.astype(jnp.float32), f32, atol=0.05)


def test_level_head_pads_each_level_and_its_two_paths_agree():
    sizes = (3, 5, 2)
    head = LevelHead(sizes, D, jnp.float32, rngs=nnx.Rngs(0))
    h_bld = _normal(0, (B, len(sizes), D)).astype(jnp.bfloat16)
    logits = head.all_levels(h_bld)
    assert logits.shape == (B, len(sizes), 5) and logits.dtype == jnp.float32
    for level, size in enumerate(sizes):
        np.testing.assert_array_equal(logits[:, level, size:], NEG_INF)
        assert (logits[:, level, :size] > NEG_INF / 2).all()
        np.testing.assert_allclose(head.level(h_bld[:, level], level), logits[:, level], atol=1e-5)


def test_sid_tokens_give_each_level_its_own_rows():
    tokens = SidTokens((3, 5, 2), D, F32, rngs=nnx.Rngs(0))
    same_code = tokens(jnp.array([1, 1, 1]))
    assert same_code.shape == (3, D)
    rows = np.concatenate([np.asarray(same_code), np.asarray(tokens.bos())[None]])
    assert len({r.tobytes() for r in rows}) == 4
    np.testing.assert_array_equal(tokens.table.embedding[...][3 + 1], same_code[1])


def test_linear_on_nd_input_equals_nnx_linear_in_value_and_gradient():
    # layers.Linear flattens [..., d_in] to 2-D for XLA's sake; nothing else may change.
    x = _normal(5, (B, K, T, D))
    ours = Linear(D, 6, use_bias=False, rngs=nnx.Rngs(0))
    plain = nnx.Linear(D, 6, use_bias=False, rngs=nnx.Rngs(0))
    np.testing.assert_array_equal(ours.kernel[...], plain.kernel[...])
    np.testing.assert_allclose(ours(x), plain(x), rtol=1e-6, atol=1e-6)
    assert ours(x).shape == (B, K, T, 6)

    def loss(layer, x):
        return jnp.sum(jnp.tanh(layer(x)) * jnp.arange(6.0))

    grad_ours = nnx.grad(loss)(ours, x)
    grad_plain = nnx.grad(loss)(plain, x)
    np.testing.assert_allclose(grad_ours.kernel[...], grad_plain.kernel[...], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nnx.grad(loss, argnums=1)(ours, x),
                               nnx.grad(loss, argnums=1)(plain, x), rtol=1e-5, atol=1e-6)
