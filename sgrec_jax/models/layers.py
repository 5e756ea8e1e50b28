"""Transformer pieces shared by the SID generators.

Every attention here reads queries shaped [B, K, T, heads, head_dim]: B requests, K candidates
per request (K = 1 for a plain batch), T positions. Keys come in blocks, each either *shared* by
the K candidates of a request ([B, S, heads, head_dim], e.g. the encoder output or the cached
history) or *own* to each candidate ([B, K, S, heads, head_dim]). One softmax runs over all
blocks together, so a decoder reads the history once per request, never K tiled copies of it.

Masks are explicit booleans (True = may attend). Scores, softmax and logits are float32 whatever
the compute dtype; masked entries get the finite NEG_INF, so nothing becomes NaN.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

# Finite "minus infinity": exp underflows to exactly 0 in float32, and no inf - inf = NaN.
NEG_INF = -1e9


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class KeysValues:
    """One block of attention keys and values.

    Attributes:
      k, v: [B, S, heads, head_dim] shared by all K candidates, or [B, K, S, heads, head_dim].
      mask: bool broadcastable to [B, K, T, S]: query t may read key s.
    """

    k: jax.Array
    v: jax.Array
    mask: jax.Array

    @property
    def shared(self) -> bool:
        return self.k.ndim == 4


def causal_mask(length: int) -> jax.Array:
    """bool [1, 1, T, T]: position t reads positions <= t."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def attend(q_bkthd: jax.Array, blocks: Sequence[KeysValues]) -> jax.Array:
    """Softmax attention of the queries over the concatenated key blocks: [B, K, T, heads, d].

    A query with no readable key at all (a padded history slot) gets a zero output rather than
    an average of masked values, so padding cannot leak into anything.
    """
    b, k, t, _, d = q_bkthd.shape
    scale = 1.0 / math.sqrt(d)
    scores, masks = [], []
    for block in blocks:
        spec = "bkthd,bshd->bkhts" if block.shared else "bkthd,bkshd->bkhts"
        s = jnp.einsum(spec, q_bkthd, block.k, preferred_element_type=jnp.float32) * scale
        mask = jnp.broadcast_to(block.mask[:, :, None], (b, k, 1, t, s.shape[-1]))
        scores.append(jnp.where(mask, s, NEG_INF))
        masks.append(mask)
    mask = jnp.concatenate(masks, axis=-1)
    weights = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
    weights = jnp.where(mask.any(axis=-1, keepdims=True), weights, 0.0).astype(q_bkthd.dtype)
    out, start = 0.0, 0
    for block, s in zip(blocks, scores, strict=True):
        w = weights[..., start : start + s.shape[-1]]
        spec = "bkhts,bshd->bkthd" if block.shared else "bkhts,bkshd->bkthd"
        out = out + jnp.einsum(spec, w, block.v)
        start += s.shape[-1]
    return out


class Linear(nnx.Linear):
    """`nnx.Linear` computed as one 2-D matmul: x [..., d_in] is flattened to [N, d_in].

    Same values and parameters as nnx.Linear. Why: the activations here are [B, K, T, D]; an
    N-d projection's weight gradient contracts over all leading axes at once, and XLA:CPU lays
    that contraction's operands out through strided transposes fused with the surrounding
    elementwise work. In the TIGER-size SFT step (80 history tokens, d_ff 1024) the four
    encoder MLP weight gradients alone cost about 3 of 15 seconds that way; over a flat
    [N, d_in] input the contraction is a plain matmul (docs/benchmarks.md, "SFT step profile").
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x.reshape(-1, x.shape[-1]))
        return y.reshape(*x.shape[:-1], y.shape[-1])


@dataclasses.dataclass(frozen=True)
class Precision:
    """Compute dtype (activations, matmuls) and parameter dtype."""

    dtype: jnp.dtype
    param_dtype: jnp.dtype

    def linear(self, d_in: int, d_out: int, rngs: nnx.Rngs) -> Linear:
        """A bias-free projection, as in T5 (pre-norm blocks do not need the biases)."""
        return Linear(
            d_in, d_out, use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype,
            rngs=rngs,
        )

    def norm(self, d: int, rngs: nnx.Rngs) -> nnx.RMSNorm:
        """RMSNorm; its statistics are float32 even under a bfloat16 compute dtype."""
        return nnx.RMSNorm(d, dtype=self.dtype, param_dtype=self.param_dtype, rngs=rngs)


class MultiHeadAttention(nnx.Module):
    """Query, fused key-value and output projections around `attend`.

    head_dim is T5's d_kv: each of the num_heads heads has its own width, independent of
    d_model (T5 and the public TIGER recipes use 6 heads x 64 at d_model 128). None means
    d_model // num_heads, the usual transformer split.
    """

    def __init__(self, d_model: int, num_heads: int, precision: Precision, *,
                 head_dim: int | None = None, rngs: nnx.Rngs):
        if head_dim is None:
            if d_model % num_heads:
                raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
            head_dim = d_model // num_heads
        if head_dim < 1:
            raise ValueError(f"head_dim must be >= 1, got {head_dim}")
        self.num_heads = num_heads
        self.head_dim = head_dim
        inner = num_heads * head_dim
        self.query = precision.linear(d_model, inner, rngs)
        self.key_value = precision.linear(d_model, 2 * inner, rngs)
        self.out = precision.linear(inner, d_model, rngs)

    def queries(self, x_xd: jax.Array) -> jax.Array:
        """[..., heads, head_dim] queries of x [..., D]."""
        return self.query(x_xd).reshape(*x_xd.shape[:-1], self.num_heads, -1)

    def keys_values(self, x_xd: jax.Array, mask: jax.Array) -> KeysValues:
        """The keys and values of x [..., S, D] as a block read under `mask`."""
        kv = self.key_value(x_xd).reshape(*x_xd.shape[:-1], 2, self.num_heads, -1)
        return KeysValues(kv[..., 0, :, :], kv[..., 1, :, :], mask)

    def __call__(self, q_xhd: jax.Array, blocks: Sequence[KeysValues]) -> jax.Array:
        o_xhd = attend(q_xhd, blocks)
        return self.out(o_xhd.reshape(*o_xhd.shape[:-2], -1))


class Block(nnx.Module):
    """Pre-norm transformer block over x [B, K, T, D].

    Self-attention reads the block's own positions (under `self_mask`) plus, optionally, a shared
    `context` (the decoder-only model's cached history). With `cross_attention`, a second
    attention reads a shared `memory` (the encoder output). Then a GELU MLP. Each sub-layer's
    output passes dropout before its residual add.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float,
        precision: Precision,
        *,
        cross_attention: bool,
        head_dim: int | None = None,
        rngs: nnx.Rngs,
    ):
        attention = dict(head_dim=head_dim, rngs=rngs)
        self.self_norm = precision.norm(d_model, rngs)
        self.self_attention = MultiHeadAttention(d_model, num_heads, precision, **attention)
        if cross_attention:
            self.cross_norm = precision.norm(d_model, rngs)
            self.cross_attention = MultiHeadAttention(d_model, num_heads, precision, **attention)
        else:
            self.cross_norm = self.cross_attention = None
        self.mlp_norm = precision.norm(d_model, rngs)
        self.mlp_in = precision.linear(d_model, d_ff, rngs)
        self.mlp_out = precision.linear(d_ff, d_model, rngs)
        self.dropout = nnx.Dropout(dropout, rngs=rngs)

    def self_keys_values(self, x_bktd: jax.Array, mask: jax.Array) -> KeysValues:
        """The keys and values this block's self-attention takes from x (to cache them)."""
        return self.self_attention.keys_values(self.self_norm(x_bktd), mask)

    def memory_keys_values(self, memory_bsd: jax.Array, mask_bs: jax.Array) -> KeysValues:
        """The shared cross-attention keys and values of an encoder output [B, S, D]."""
        return self.cross_attention.keys_values(memory_bsd, mask_bs[:, None, None, :])

    def __call__(
        self,
        x_bktd: jax.Array,
        self_mask: jax.Array,
        *,
        context: KeysValues | None = None,
        memory: KeysValues | None = None,
        deterministic: bool,
    ) -> tuple[jax.Array, KeysValues]:
        """(x after the block, the self-attention keys and values of x's own positions)."""
        h = self.self_norm(x_bktd)
        own = self.self_attention.keys_values(h, self_mask)
        blocks = [own] if context is None else [context, own]
        x = x_bktd + self.dropout(
            self.self_attention(self.self_attention.queries(h), blocks),
            deterministic=deterministic,
        )
        if self.cross_attention is not None:
            if memory is None:
                raise ValueError("a cross-attention block needs memory")
            q = self.cross_attention.queries(self.cross_norm(x))
            x = x + self.dropout(self.cross_attention(q, [memory]), deterministic=deterministic)
        h = jax.nn.gelu(self.mlp_in(self.mlp_norm(x)))
        return x + self.dropout(self.mlp_out(h), deterministic=deterministic), own


    def decode_step(
        self,
        x_bk1d: jax.Array,
        cache: KeysValues,
        position: jax.Array | int,
        *,
        context: KeysValues | None = None,
        memory: KeysValues | None = None,
    ) -> tuple[jax.Array, KeysValues]:
        """One new position per candidate, reading the cached earlier ones (inference only).

        `cache` holds [B, K, T, heads, head_dim] keys and values of all T decoder positions;
        this step writes position `position` (may be traced) and attends to positions <= it,
        which equals `__call__` over the whole causal prefix. Returns (x, updated cache).
        """
        h = self.self_norm(x_bk1d)
        new = self.self_attention.keys_values(h, None)
        k = jax.lax.dynamic_update_slice_in_dim(cache.k, new.k.astype(cache.k.dtype), position, 2)
        v = jax.lax.dynamic_update_slice_in_dim(cache.v, new.v.astype(cache.v.dtype), position, 2)
        readable = (jnp.arange(k.shape[2]) <= position)[None, None, None, :]
        own = KeysValues(k, v, readable)
        blocks = [own] if context is None else [context, own]
        x = x_bk1d + self.self_attention(self.self_attention.queries(h), blocks)
        if self.cross_attention is not None:
            q = self.cross_attention.queries(self.cross_norm(x))
            x = x + self.cross_attention(q, [memory])
        h = jax.nn.gelu(self.mlp_in(self.mlp_norm(x)))
        return x + self.mlp_out(h), KeysValues(k, v, cache.mask)


class SidTokens(nnx.Module):
    """Embeddings of SID tokens: (level l, code c) is row offset[l] + c of one table; BOS last."""

    def __init__(self, level_sizes: Sequence[int], d_model: int, precision: Precision, *,
                 rngs: nnx.Rngs):
        self.offsets = tuple(itertools.accumulate(tuple(level_sizes)[:-1], initial=0))
        self.bos_id = int(sum(level_sizes))
        self.table = nnx.Embed(
            self.bos_id + 1, d_model, dtype=precision.dtype, param_dtype=precision.param_dtype,
            rngs=rngs,
        )

    def __call__(self, codes_xl: jax.Array) -> jax.Array:
        """[..., l, D] embeddings of codes of the first l levels ([..., l] int)."""
        offsets = jnp.array(self.offsets[: codes_xl.shape[-1]], jnp.int32)
        return self.table(codes_xl + offsets)

    def at_level(self, codes_x: jax.Array, level: jax.Array | int) -> jax.Array:
        """[..., D] embeddings of codes [...] all of level `level` (may be traced)."""
        return self.table(codes_x + jnp.array(self.offsets, jnp.int32)[level])

    def bos(self) -> jax.Array:
        """[D] the decoder's begin-of-sequence embedding."""
        return self.table(jnp.array(self.bos_id))


class LevelHead(nnx.Module):
    """Per-level output projection to float32 logits padded to V = max(level_sizes).

    Codes >= level_sizes[l] get NEG_INF, so a softmax or argmax over V never picks them.
    """

    def __init__(self, level_sizes: Sequence[int], d_model: int, param_dtype: jnp.dtype, *,
                 rngs: nnx.Rngs):
        num_levels, vocab = len(level_sizes), max(level_sizes)
        init = nnx.initializers.lecun_normal(in_axis=1, out_axis=2, batch_axis=0)
        self.kernel_ldv = nnx.Param(init(rngs.params(), (num_levels, d_model, vocab), param_dtype))
        self.bias_lv = nnx.Param(jnp.zeros((num_levels, vocab), param_dtype))
        self.level_sizes = tuple(level_sizes)

    def all_levels(self, h_xld: jax.Array) -> jax.Array:
        """[..., L, V] logits of level l from h[..., l, :]."""
        logits = jnp.einsum(
            "...ld,ldv->...lv", h_xld.astype(jnp.float32), self.kernel_ldv[...].astype(jnp.float32)
        ) + self.bias_lv[...].astype(jnp.float32)
        return jnp.where(self._valid(self.level_sizes), logits, NEG_INF)

    def level(self, h_xd: jax.Array, level: jax.Array | int) -> jax.Array:
        """[..., V] logits of one level (may be traced)."""
        kernel_dv = self.kernel_ldv[level].astype(jnp.float32)
        logits = h_xd.astype(jnp.float32) @ kernel_dv + self.bias_lv[level].astype(jnp.float32)
        size = jnp.array(self.level_sizes, jnp.int32)[level]
        return jnp.where(jnp.arange(max(self.level_sizes)) < size, logits, NEG_INF)

    def _valid(self, sizes: int | tuple[int, ...]) -> jax.Array:
        """bool [V] or [L, V]: which padded vocabulary slots are real codes."""
        return jnp.arange(max(self.level_sizes)) < jnp.array(sizes)[..., None]
