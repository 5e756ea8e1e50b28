"""User-context features x for the judge's stage-2 models (aggregator, Bradley-Terry, distilled).

x depends on the request's history only (never its target), so the same features serve training
pairs and RL requests. Layout, float32 [B, F] with F = D + NUM_STATS:

  [0, D)   mean of the history items' unit-norm text embeddings (what the user reads about);
  D + 0    history length, log1p(len) / log1p(H) in [0, 1];
  D + 1    mean item popularity of the history, log1p(count) / log1p(max count) in [0, 1]
           (counts from the training sequences only, so no validation/test target leaks);
  D + 2    coherence, the norm of the mean embedding in [0, 1] (1 = all items alike);
  D + 3    recency, (1 + cos(last item, mean embedding)) / 2 in [0, 1].

The statistics are the cheap signals the aspects' importance plausibly depends on: a long,
coherent history makes profile relevance informative, a scattered one makes novelty matter.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import PAD_ITEM, training_sequences

NUM_STATS = 4


@flax.struct.dataclass
class ContextTables:
    """What context_features reads: emb_nd float32 [N, D] unit-norm, log_pop_n float32 [N]."""

    emb_nd: jax.Array
    log_pop_n: jax.Array

    @property
    def dim(self) -> int:
        """F, the width of the features."""
        return int(self.emb_nd.shape[1]) + NUM_STATS


def context_tables(dataset: SeqRecDataset, emb_nd: np.ndarray) -> ContextTables:
    """Tables from unit-norm item embeddings [N, D] and the training sequences' popularity."""
    emb_nd = np.asarray(emb_nd, np.float32)
    if emb_nd.shape[0] != dataset.num_items:
        raise ValueError(f"{emb_nd.shape[0]} embeddings for {dataset.num_items} items")
    counts_n = np.bincount(np.concatenate(training_sequences(dataset)),
                           minlength=dataset.num_items)
    log_pop_n = np.log1p(counts_n) / max(np.log1p(counts_n.max()), 1e-6)
    return ContextTables(emb_nd=jnp.asarray(emb_nd), log_pop_n=jnp.asarray(log_pop_n, jnp.float32))


def context_features(tables: ContextTables, history_bh: jax.Array) -> jax.Array:
    """float32 [B, F] features of right-aligned histories (PAD_ITEM = -1 left padding); jittable."""
    mask_bh = history_bh != PAD_ITEM
    safe_bh = jnp.where(mask_bh, history_bh, 0)
    maskf_bh = mask_bh.astype(jnp.float32)
    length_b = maskf_bh.sum(axis=1)
    denom_b = jnp.maximum(length_b, 1.0)
    emb_bhd = tables.emb_nd[safe_bh] * maskf_bh[..., None]
    mean_bd = emb_bhd.sum(axis=1) / denom_b[:, None]
    horizon = history_bh.shape[1]
    length_stat = jnp.log1p(length_b) / np.log1p(horizon)
    popularity = (tables.log_pop_n[safe_bh] * maskf_bh).sum(axis=1) / denom_b
    coherence = jnp.linalg.norm(mean_bd, axis=1)
    # Right-aligned: the last slot is the most recent item whenever the history is non-empty.
    last_bd = emb_bhd[:, -1]
    cos_last = (last_bd * mean_bd).sum(axis=1) / jnp.maximum(coherence, 1e-6)
    recency = jnp.where(length_b > 0, (1.0 + cos_last) / 2.0, 0.0)
    stats_b4 = jnp.stack([length_stat, popularity, coherence, recency], axis=1)
    return jnp.concatenate([mean_bd, stats_b4], axis=1).astype(jnp.float32)


def features_of(tables: ContextTables, history_nh: np.ndarray, batch_size: int = 4096
                ) -> np.ndarray:
    """float32 [n, F] context_features of many histories, in fixed-size batches (one compile)."""
    fn = jax.jit(context_features)
    n = len(history_nh)
    out = np.zeros((n, tables.dim), np.float32)
    for start in range(0, n, batch_size):
        part = history_nh[start:start + batch_size]
        padded = np.full((batch_size, history_nh.shape[1]), PAD_ITEM, np.int32)
        padded[: len(part)] = part
        out[start:start + len(part)] = np.asarray(fn(tables, jnp.asarray(padded)))[: len(part)]
    return out
