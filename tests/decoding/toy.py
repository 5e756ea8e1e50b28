"""Small pure-jnp generators with the SidPolicy interface, and a tiny catalog, for decoding tests.

They stand in for the real model so the search and scoring logic is tested against logits we
control; one test per module also runs the real generator.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.sid.build import semantic_ids_from_codes

NEG_INF = -1e9  # what the real model puts at padded vocabulary slots
# Incremented whenever a toy model's encode is traced (or run eagerly): counts jit traces.
ENCODE_CALLS = [0]


def tiny_sids(num_items: int = 30, codebook_sizes: tuple[int, ...] = (4, 5, 6), seed: int = 0):
    """SemanticIds of random codes (with the dedup level appended)."""
    rng = np.random.default_rng(seed)
    codes = np.stack([rng.integers(0, v, num_items) for v in codebook_sizes], 1)
    return semantic_ids_from_codes(codes, codebook_sizes)


def _padded(logits_xv: jax.Array, level_sizes: tuple[int, ...], level) -> jax.Array:
    valid_v = jnp.arange(logits_xv.shape[-1]) < jnp.array(level_sizes)[level]
    return jnp.where(valid_v, logits_xv, NEG_INF)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HashModel:
    """Logits = a random row picked by a hash of (level, prefix) + a per-request vector.

    The request vector is the masked sum of the history items' rows of `item_nv`, so different
    histories give different rankings; distinct prefixes almost always give distinct rows.
    """

    table_mv: jax.Array  # [M, V]
    item_nv: jax.Array  # [N, V]
    level_sizes: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))

    @classmethod
    def create(cls, level_sizes, num_items: int, seed: int = 0, scale: float = 2.0):
        rng = np.random.default_rng(seed)
        v = max(level_sizes)
        return cls(
            jnp.asarray(scale * rng.standard_normal((4099, v)), jnp.float32),
            jnp.asarray(0.5 * rng.standard_normal((num_items, v)), jnp.float32),
            tuple(level_sizes),
        )

    def encode(self, history_bh, history_mask_bh, *, deterministic=True, leave_out_b=None):
        ENCODE_CALLS[0] += 1
        rows_bhv = self.item_nv[jnp.where(history_mask_bh, history_bh, 0)]
        return jnp.where(history_mask_bh[:, :, None], rows_bhv, 0.0).sum(1)

    def decode_logits(self, memory_bv, prefix_codes_bkl, level):
        m = self.table_mv.shape[0]
        key_bk = jnp.full(prefix_codes_bkl.shape[:2], level + 1, jnp.int32)
        for j in range(min(prefix_codes_bkl.shape[-1], len(self.level_sizes))):
            step_bk = (key_bk * 257 + prefix_codes_bkl[:, :, j] + 1) % m
            key_bk = jnp.where(j < level, step_bk, key_bk)  # level may be traced
        logits_bkv = self.table_mv[key_bk] + memory_bv[:, None, :]
        return _padded(logits_bkv, self.level_sizes, level)

    def start_decoding(self, memory_bv, num_candidates):
        return ()  # stateless: decode_step rescores the prefix

    def decode_step(self, memory_bv, cache, codes_bkl, level):
        return self.decode_logits(memory_bv, codes_bkl, level), cache

    def sequence_logits(self, memory_bv, codes_bkl):
        levels = range(len(self.level_sizes))
        return jnp.stack([self.decode_logits(memory_bv, codes_bkl, l) for l in levels], axis=2)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class PathModel:
    """Prefers one fixed SID per request, whatever the prefix: its unconstrained greedy decode is
    exactly that SID. Request b's SID is targets_tl[history_bh[b, -1]]."""

    targets_tl: jax.Array  # int32 [T, L]
    level_sizes: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))

    def encode(self, history_bh, history_mask_bh, *, deterministic=True, leave_out_b=None):
        return self.targets_tl[history_bh[:, -1]]

    def decode_logits(self, memory_bl, prefix_codes_bkl, level):
        v = max(self.level_sizes)
        logits_bv = 5.0 * jax.nn.one_hot(memory_bl[:, level], v)
        logits_bkv = jnp.broadcast_to(logits_bv[:, None], (*prefix_codes_bkl.shape[:2], v))
        return _padded(logits_bkv, self.level_sizes, level)

    def start_decoding(self, memory_bl, num_candidates):
        return ()

    def decode_step(self, memory_bl, cache, codes_bkl, level):
        return self.decode_logits(memory_bl, codes_bkl, level), cache

    def sequence_logits(self, memory_bl, codes_bkl):
        levels = range(len(self.level_sizes))
        return jnp.stack([self.decode_logits(memory_bl, codes_bkl, l) for l in levels], axis=2)


def histories(num_requests: int, num_items: int, length: int = 5, seed: int = 1):
    """int32 histories [B, H] with some left padding (-1) and their bool masks."""
    rng = np.random.default_rng(seed)
    history = rng.integers(0, num_items, (num_requests, length)).astype(np.int32)
    pads = rng.integers(0, length, num_requests)
    mask = np.arange(length)[None] >= pads[:, None]
    history[~mask] = -1
    return jnp.asarray(history), jnp.asarray(mask)


@jax.jit
def all_item_logits(model, history_bh, history_mask_bh, codes_nl):
    """Teacher-forced logits [B, N, L, V] of every catalog item (codes_nl [N, L]) per request."""
    codes_bnl = jnp.broadcast_to(codes_nl, (history_bh.shape[0], *codes_nl.shape))
    return model.sequence_logits(model.encode(history_bh, history_mask_bh), codes_bnl)


def reference_logprobs(codes_nl: np.ndarray, logits_bnlv: np.ndarray):
    """Brute force in numpy: log-prob [B, N] and per-level entropy [B, N, L] of every item.

    The allowed tokens after a prefix are read straight off the item codes, not the trie.
    """
    b, n, levels, _ = logits_bnlv.shape
    logprob_bn = np.zeros((b, n))
    entropy_bnl = np.zeros((b, n, levels))
    for i, sid in enumerate(codes_nl.tolist()):
        for level in range(levels):
            same_prefix = (codes_nl[:, :level] == np.array(sid[:level])).all(1)
            allowed = np.unique(codes_nl[same_prefix, level])
            z_ba = logits_bnlv[:, i, level, allowed].astype(np.float64)
            logp_ba = z_ba - np.logaddexp.reduce(z_ba, axis=1, keepdims=True)
            logprob_bn[:, i] += logp_ba[:, np.searchsorted(allowed, sid[level])]
            entropy_bnl[:, i, level] = -(np.exp(logp_ba) * logp_ba).sum(1)
    return logprob_bn, entropy_bnl


# The shared tiny setting: 30 items, codebooks (4, 5, 6) + dedup level, B requests.
SIDS = tiny_sids()
N = SIDS.codes_nl.shape[0]
B = 3
