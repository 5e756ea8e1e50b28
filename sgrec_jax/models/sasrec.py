"""SASRec (Kang & McAuley 2018): a causal Transformer over the item history, the ID baseline.

Trained as RecBole's "SASRec with CE": full-softmax cross-entropy over all N items from the last
position only, since our split already makes every prefix a separate training example. Defaults
are RecBole's (2 blocks, 2 heads, hidden 64, inner 256, GELU, dropout 0.5, post-LayerNorm,
N(0, 0.02) init), which reach R@10 0.0821 on Beauty.

Histories are right-aligned (most recent item in the last slot, PAD_ITEM on the left) and a
learned position embedding is indexed by slot, so the most recent item always has the same
position. Padded slots are zeroed after the embedding and after every block (as in the original
SASRec) and masked out as attention keys, so a padded slot's item id never matters; hence the
item table has just the N catalog rows. The same table embeds inputs and scores outputs.

`dtype` is the compute dtype (e.g. "bfloat16" on an accelerator): embeddings, projections and
the attention's value mix run in it; parameters stay float32, and the attention softmax, the
LayerNorm statistics, the catalog scores and the loss are float32 whatever it is.

Dropout draws from an explicit key (`rng`), not from module state, so `ce_loss` is a pure
function of (model, batch, rng) for `nnx.value_and_grad` under `jax.jit`.

The scorer doubles as a pCTR model: `click_logits` scores G candidate items per user from the
user state without touching the full catalog.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from sgrec_jax.data.split import PAD_ITEM

NO_ITEM_LOGIT = -1e9  # click_logits of a "no item" candidate (PAD_ITEM): probability ~0.
_MASKED = -1e9  # Attention logit of a masked key: finite, so all-masked rows give no NaN.
_LAYER_NORM_EPS = 1e-12  # RecBole's value.


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when `key` is None (deterministic) or rate is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0)


def _linear(d_in: int, d_out: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(d_in, d_out, kernel_init=nnx.initializers.normal(0.02), dtype=dtype,
                      rngs=rngs)


def _layer_norm(d: int, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    """LayerNorm whose mean and variance are float32 (Flax computes the statistics in at least
    float32); its output is cast to `dtype`."""
    return nnx.LayerNorm(d, epsilon=_LAYER_NORM_EPS, dtype=dtype, rngs=rngs)


def _compute_dtype(dtype: str | jnp.dtype) -> jnp.dtype:
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    return dtype


class SASRecBlock(nnx.Module):
    """Multi-head causal self-attention + point-wise FFN, each with residual and LayerNorm."""

    def __init__(
        self,
        d_model: int,
        *,
        num_heads: int,
        d_ff: int,
        dropout: float,
        attention_dropout: float,
        norm_first: bool,
        dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ):
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.norm_first = norm_first
        self.qkv = _linear(d_model, 3 * d_model, dtype, rngs)
        self.attention_out = _linear(d_model, d_model, dtype, rngs)
        self.attention_norm = _layer_norm(d_model, dtype, rngs)
        self.ffn_in = _linear(d_model, d_ff, dtype, rngs)
        self.ffn_out = _linear(d_ff, d_model, dtype, rngs)
        self.ffn_norm = _layer_norm(d_model, dtype, rngs)

    def _attention(
        self, x_bhd: jax.Array, allowed_bqk: jax.Array, keys: list[jax.Array | None]
    ) -> jax.Array:
        b, h, d = x_bhd.shape
        q, k, v = jnp.split(self.qkv(x_bhd).reshape(b, h, 3 * self.num_heads, -1), 3, axis=2)
        logits_bnqk = jnp.einsum(
            "bqnc,bknc->bnqk", q, k, preferred_element_type=jnp.float32
        ) / jnp.sqrt(q.shape[-1])
        logits_bnqk = jnp.where(allowed_bqk[:, None], logits_bnqk, _MASKED)
        probs_bnqk = _dropout(jax.nn.softmax(logits_bnqk, axis=-1), self.attention_dropout, keys[0])
        out_bhd = jnp.einsum("bnqk,bknc->bqnc", probs_bnqk.astype(v.dtype), v).reshape(b, h, d)
        return _dropout(self.attention_out(out_bhd), self.dropout, keys[1])

    def _ffn(self, x_bhd: jax.Array, key: jax.Array | None) -> jax.Array:
        hidden_bhf = jax.nn.gelu(self.ffn_in(x_bhd), approximate=False)  # RecBole: exact GELU.
        return _dropout(self.ffn_out(hidden_bhf), self.dropout, key)

    def __call__(
        self, x_bhd: jax.Array, allowed_bqk: jax.Array, keys: list[jax.Array | None]
    ) -> jax.Array:
        """keys: 3 dropout keys (attention probabilities, attention output, FFN) or Nones."""
        if self.norm_first:
            x_bhd = x_bhd + self._attention(self.attention_norm(x_bhd), allowed_bqk, keys[:2])
            return x_bhd + self._ffn(self.ffn_norm(x_bhd), keys[2])
        x_bhd = self.attention_norm(x_bhd + self._attention(x_bhd, allowed_bqk, keys[:2]))
        return self.ffn_norm(x_bhd + self._ffn(x_bhd, keys[2]))


class SASRec(nnx.Module):
    """Next-item scorer over N catalog items from a right-aligned history of length H."""

    def __init__(
        self,
        num_items: int,
        max_history: int,
        *,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 2,
        d_ff: int = 256,
        dropout: float = 0.5,
        attention_dropout: float = 0.5,
        norm_first: bool = False,
        dtype: str = "float32",
        rngs: nnx.Rngs,
    ):
        """norm_first: pre-LayerNorm blocks plus a final LayerNorm; else RecBole's post-LN with
        a LayerNorm on the input embeddings. dtype: the compute dtype (module docstring);
        parameters are float32 whatever it is."""
        compute_dtype = _compute_dtype(dtype)
        if num_items < 1 or max_history < 1 or num_layers < 1:
            raise ValueError(
                "SASRec needs num_items, max_history and num_layers >= 1, got "
                f"{num_items}, {max_history}, {num_layers}"
            )
        for name, rate in (("dropout", dropout), ("attention_dropout", attention_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {rate}")
        init = nnx.initializers.normal(0.02)
        self.num_items = num_items
        self.max_history = max_history
        self.dropout = dropout
        self.norm_first = norm_first
        embed = dict(embedding_init=init, dtype=compute_dtype, rngs=rngs)
        self.item_embed = nnx.Embed(num_items, d_model, **embed)
        self.position_embed = nnx.Embed(max_history, d_model, **embed)
        # Input norm (post-LN) or final norm (pre-LN).
        self.norm = _layer_norm(d_model, compute_dtype, rngs)
        self.blocks = nnx.List(
            [
                SASRecBlock(
                    d_model,
                    num_heads=num_heads,
                    d_ff=d_ff,
                    dropout=dropout,
                    attention_dropout=attention_dropout,
                    norm_first=norm_first,
                    dtype=compute_dtype,
                    rngs=rngs,
                )
                for _ in range(num_layers)
            ]
        )

    def hidden_states(
        self,
        history_bh: jax.Array,
        history_mask_bh: jax.Array,
        *,
        deterministic: bool,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """[B, H, d] in the compute dtype: the state after each history slot, zero at padded
        slots.

        Slot t sees only slots <= t. `rng` (a key) drives dropout and is needed unless
        `deterministic`.
        """
        if history_bh.shape[1] != self.max_history:
            raise ValueError(
                f"history has {history_bh.shape[1]} slots, the model was built for "
                f"{self.max_history}"
            )
        if not deterministic and rng is None:
            raise ValueError("SASRec needs an rng key for dropout unless deterministic=True")
        num_sites = 1 + 3 * len(self.blocks)
        keys = (
            [None] * num_sites
            if deterministic
            else [jax.random.fold_in(rng, i) for i in range(num_sites)]
        )
        h = history_bh.shape[1]
        mask_bh1 = history_mask_bh[..., None]
        items_bh = jnp.where(history_mask_bh, history_bh, 0)
        x_bhd = self.item_embed(items_bh) + self.position_embed(jnp.arange(h))
        if not self.norm_first:
            x_bhd = self.norm(x_bhd)
        x_bhd = _dropout(x_bhd, self.dropout, keys[0]) * mask_bh1
        causal_qk = jnp.tril(jnp.ones((h, h), dtype=bool))
        allowed_bqk = causal_qk[None] & history_mask_bh[:, None, :]
        for i, block in enumerate(self.blocks):
            x_bhd = block(x_bhd, allowed_bqk, keys[1 + 3 * i : 4 + 3 * i]) * mask_bh1
        if self.norm_first:
            x_bhd = self.norm(x_bhd) * mask_bh1
        return x_bhd

    def user_state(
        self,
        history_bh: jax.Array,
        history_mask_bh: jax.Array,
        *,
        deterministic: bool,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """[B, d] in the compute dtype: the state at the last (most recent) slot."""
        return self.hidden_states(
            history_bh, history_mask_bh, deterministic=deterministic, rng=rng
        )[:, -1]

    def scores(
        self,
        history_bh: jax.Array,
        history_mask_bh: jax.Array,
        *,
        deterministic: bool,
        rng: jax.Array | None = None,
    ) -> jax.Array:
        """float32 [B, N]: next-item logits over the whole catalog."""
        state_bd = self.user_state(
            history_bh, history_mask_bh, deterministic=deterministic, rng=rng
        )
        return state_bd.astype(jnp.float32) @ self._table_nd().T

    def _table_nd(self) -> jax.Array:
        """The float32 [N, d] item table that scores outputs (never rounded to the compute
        dtype, so close scores keep their order)."""
        return self.item_embed.embedding[...].astype(jnp.float32)

    def click_logits(self, user_state_bd: jax.Array, items_bg: jax.Array) -> jax.Array:
        """float32 [B, G]: logits of G candidate items per user (PAD_ITEM -> NO_ITEM_LOGIT)."""
        real_bg = items_bg != PAD_ITEM
        emb_bgd = self._table_nd()[jnp.where(real_bg, items_bg, 0)]
        logits_bg = jnp.einsum("bd,bgd->bg", user_state_bd.astype(jnp.float32), emb_bgd)
        return jnp.where(real_bg, logits_bg, NO_ITEM_LOGIT)


def ce_loss(model: SASRec, batch: dict[str, jax.Array], rng: jax.Array | None) -> jax.Array:
    """Mean full-softmax cross-entropy of batch["target"] given the history; scalar.

    batch: history int32 [B, H], history_mask bool [B, H], target int32 [B], and optionally
    valid bool [B] (padded evaluation batches), which restricts the mean to valid rows.
    Dropout is on when `rng` is a key and off when it is None (validation loss).
    """
    logits_bn = model.scores(
        batch["history"], batch["history_mask"], deterministic=rng is None, rng=rng
    )
    loss_b = optax.softmax_cross_entropy_with_integer_labels(logits_bn, batch["target"])
    if "valid" not in batch:
        return loss_b.mean()
    valid_b = batch["valid"].astype(loss_b.dtype)
    return (loss_b * valid_b).sum() / jnp.maximum(valid_b.sum(), 1.0)


def top_k(model: SASRec, batch: dict[str, jax.Array], k: int) -> jax.Array:
    """int32 [B, k]: the k highest-scoring catalog items per request, best first (no dropout).

    Items already in the history stay rankable, as in RecBole's sequential full-sort evaluation.
    """
    scores_bn = model.scores(batch["history"], batch["history_mask"], deterministic=True)
    return jax.lax.top_k(scores_bn, k)[1].astype(jnp.int32)
