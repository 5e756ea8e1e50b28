import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.models.history import HistoryEmbedding, code_tokens, item_tokens
from sgrec_jax.models.layers import Precision

B, H, L, D = 2, 4, 3, 6
F32 = Precision(jnp.dtype(jnp.float32), jnp.dtype(jnp.float32))
EMB = jax.random.normal(jax.random.key(0), (B, H, L, D))
SLOT = jax.random.normal(jax.random.key(1), (B, H, D))
MASK = jnp.array([[False, True, True, True], [True] * H])


def embedding(
    encoding: str, max_history: int = H, item_id_embedding: bool = False
) -> HistoryEmbedding:
    return HistoryEmbedding(
        encoding, max_history=max_history, num_items=10, d_model=D,
        item_id_embedding=item_id_embedding, precision=F32, rngs=nnx.Rngs(0),
    )


def test_item_encoding_sums_codes_one_token_per_item():
    tokens, mask = item_tokens(EMB, SLOT, MASK)
    np.testing.assert_allclose(tokens, EMB.sum(2) + SLOT, atol=1e-6)
    np.testing.assert_array_equal(mask, MASK)


def test_code_encoding_is_item_major_one_token_per_code():
    tokens, mask = code_tokens(EMB, SLOT, MASK)
    assert tokens.shape == (B, H * L, D) and mask.shape == (B, H * L)
    np.testing.assert_allclose(tokens[:, 1 * L + 2], EMB[:, 1, 2] + SLOT[:, 1], atol=1e-6)
    np.testing.assert_array_equal(mask[0], [False] * L + [True] * (H - 1) * L)


def test_positions_are_right_aligned_so_short_histories_match_long_ones():
    emb = embedding("item", max_history=H)
    items = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    full, _ = emb(EMB, items, MASK)
    short, _ = emb(EMB[:, 1:], items[:, 1:], MASK[:, 1:])
    np.testing.assert_allclose(short, full[:, 1:], atol=1e-6)
    with pytest.raises(ValueError, match="exceeds max_history=3"):
        embedding("item", max_history=3)(EMB, items, MASK)


def test_item_id_embedding_adds_a_per_item_term():
    items = jnp.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    with_ids = embedding("item", item_id_embedding=True)
    without, _ = embedding("item")(EMB, items, MASK)
    tokens, _ = with_ids(EMB, items, MASK)
    np.testing.assert_allclose(tokens - without, with_ids.item_ids(items), atol=1e-5)


def test_unknown_encoding_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid names: code, item"):
        embedding("items")


def test_item_id_dropout_drops_whole_id_vectors_only_in_training():
    """item_id_dropout zeroes a slot's entire id vector (never part of it), scales the kept
    ones, is off when deterministic, and leaves the code embeddings alone."""
    precision = Precision(jnp.float32, jnp.float32)
    emb = HistoryEmbedding("item", max_history=6, num_items=9, d_model=8, item_id_embedding=True,
                           item_id_dropout=0.5, precision=precision, rngs=nnx.Rngs(0))
    items = jnp.arange(48).reshape(8, 6) % 9
    mask = jnp.ones((8, 6), bool)
    codes = jnp.zeros((8, 6, 3, 8))
    positions = emb.positions(jnp.arange(6))
    ids = emb.item_ids(items)
    train, _ = emb(codes, items, mask, deterministic=False)
    kept = np.asarray(train - positions)
    dropped = np.all(kept == 0, axis=-1)
    assert 0 < dropped.mean() < 1
    np.testing.assert_allclose(kept[~dropped], 2 * np.asarray(ids)[~dropped], rtol=1e-6)
    infer, _ = emb(codes, items, mask)
    np.testing.assert_allclose(infer, positions + ids, rtol=1e-6)
    plain = HistoryEmbedding("item", max_history=6, num_items=9, d_model=8,
                             item_id_embedding=True, precision=precision, rngs=nnx.Rngs(0))
    assert plain.item_id_dropout is None  # no new state when unused
