"""History encodings: a user's item history as the token sequence the generator reads.

Each history item arrives as its L code embeddings [B, H, L, D] (from `layers.SidTokens`, shared
with the decoder) plus a per-slot term [B, H, D]: a learned position embedding and, optionally, a
learned item-id embedding. An encoding in HISTORY_ENCODINGS turns these into S tokens:

  "item": one token per item, the sum of its code embeddings (S = H; cheap).
  "code": one token per code, item-major (S = H * L; TIGER). The level of a code is already in
          its embedding (each level has its own rows), so tokens only add their item's slot term.

Histories are right-aligned (the newest item is slot H-1), so slot h uses position
max_history - H + h: a position always means "this many items before the target".
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from sgrec_jax.core.registry import Registry
from sgrec_jax.models.layers import Precision

# (code_emb_bhld, slot_bhd, mask_bh) -> (tokens_bsd, mask_bs)
Encoding = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]

HISTORY_ENCODINGS: Registry[Encoding] = Registry("history encoding")


@HISTORY_ENCODINGS.register("item")
def item_tokens(
    code_emb_bhld: jax.Array, slot_bhd: jax.Array, mask_bh: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One token per history item: the sum of its L code embeddings plus its slot term."""
    return code_emb_bhld.sum(axis=2) + slot_bhd, mask_bh


@HISTORY_ENCODINGS.register("code")
def code_tokens(
    code_emb_bhld: jax.Array, slot_bhd: jax.Array, mask_bh: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One token per code, item-major (S = H * L), each plus its item's slot term."""
    b, h, num_levels, d = code_emb_bhld.shape
    tokens_bsd = (code_emb_bhld + slot_bhd[:, :, None]).reshape(b, h * num_levels, d)
    return tokens_bsd, jnp.repeat(mask_bh, num_levels, axis=1)


class HistoryEmbedding(nnx.Module):
    """The history's input tokens: an encoding from HISTORY_ENCODINGS plus the slot terms."""

    def __init__(
        self,
        encoding: str,
        *,
        max_history: int,
        num_items: int,
        d_model: int,
        item_id_embedding: bool,
        precision: Precision,
        rngs: nnx.Rngs,
        item_id_dropout: float = 0.0,
    ):
        HISTORY_ENCODINGS.get(encoding)  # fail at construction on an unknown name
        self.encoding = encoding
        self.max_history = max_history
        embed = dict(dtype=precision.dtype, param_dtype=precision.param_dtype, rngs=rngs)
        self.positions = nnx.Embed(max_history, d_model, **embed)
        self.item_ids = nnx.Embed(num_items, d_model, **embed) if item_id_embedding else None
        # Drops a slot's whole item-id vector (broadcast over D), so the model must also predict
        # from the codes alone and the id only refines them.
        # Created only when used, so models without it keep their state tree (and checkpoints).
        self.item_id_dropout = (
            nnx.Dropout(item_id_dropout, broadcast_dims=(2,), rngs=rngs)
            if item_id_embedding and item_id_dropout > 0 else None
        )

    def __call__(
        self, code_emb_bhld: jax.Array, items_bh: jax.Array, mask_bh: jax.Array, *,
        deterministic: bool = True,
    ) -> tuple[jax.Array, jax.Array]:
        """(tokens [B, S, D], mask [B, S]) of histories of H <= max_history slots.

        items_bh must hold a valid item index in every slot (padded slots: any item, masked).
        """
        h = items_bh.shape[1]
        if h > self.max_history:
            raise ValueError(f"history length {h} exceeds max_history={self.max_history}")
        slot_bhd = jnp.broadcast_to(
            self.positions(jnp.arange(self.max_history - h, self.max_history)),
            (*items_bh.shape, code_emb_bhld.shape[-1]),
        )
        if self.item_ids is not None:
            ids_bhd = self.item_ids(items_bh)
            if self.item_id_dropout is not None:
                ids_bhd = self.item_id_dropout(ids_bhd, deterministic=deterministic)
            slot_bhd = slot_bhd + ids_bhd
        return HISTORY_ENCODINGS.get(self.encoding)(code_emb_bhld, slot_bhd, mask_bh)
