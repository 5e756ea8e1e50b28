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
