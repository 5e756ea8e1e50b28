"""The feature backend of the judge: aspect evidence from item embeddings and logs, no LLM.

    tables = feature_tables(dataset, setup.text_embeddings())
    evidence_bga = feature_aspects(tables, requests, items_bg)   # jittable

For a request (a user's history before its target) and a candidate item, with unit-norm item
embeddings e (algorithms.md section 3, design):
- profile = (1 + cos(mean of the history's embeddings, e_item)) / 2;
- future = (1 + max cos(e_item, e_j)) / 2 over the user's training items j that come after the
  request's target position. The target item itself is never among them (not at its position,
  nor where the user bought it again), since comparing with it would leak the label. NaN when
  there are none, which is always the case for validation and test requests: their targets lie
  past the end of the training sequences;
- novelty = 1 - max(0, max cos(e_item, e_h)) over the history items h.
Every aspect is NaN for a padded candidate (-1), and profile and novelty for an empty history.

The target position is found from the request itself: the last position t of the user's
training sequence holding the target whose preceding items equal the request's history. A
repeated (history, target) window can only move t later, which shrinks the set of future items,
never adds to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import PAD_ITEM, training_sequences
from sgrec_jax.embeddings.base import l2_normalize_rows
from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.rewards.channel import RewardRequests

# The cache's "prompt version" of feature evidence: bump it when the formulas change.
FEATURES_VERSION = "features-v1"


@struct.dataclass
class FeatureTables:
    """Device arrays the feature backend reads.

    Attributes:
      item_nd: float32 [N, D] item embeddings, unit-norm rows.
      sequences_ul: int32 [U, Lmax] each user's training sequence (split.training_sequences),
        oldest first, padded on the right with PAD_ITEM.
      lengths_u: int32 [U] the sequences' lengths.
    """

    item_nd: jax.Array
    sequences_ul: jax.Array
    lengths_u: jax.Array


def feature_tables(dataset: SeqRecDataset, item_embeddings_nd: np.ndarray) -> FeatureTables:
    """The tables of `dataset` with the given item embeddings (rows are L2-normalised here)."""
    x_nd = np.asarray(item_embeddings_nd, dtype=np.float32)
    if x_nd.ndim != 2 or x_nd.shape[0] != dataset.num_items:
        raise ValueError(
            f"item embeddings have shape {x_nd.shape}, expected ({dataset.num_items}, D)"
        )
    sequences = training_sequences(dataset)
    lengths_u = np.array([len(s) for s in sequences], dtype=np.int32)
    sequences_ul = np.full((len(sequences), max(1, int(lengths_u.max()))), PAD_ITEM, np.int32)
    for u, seq in enumerate(sequences):
        sequences_ul[u, : len(seq)] = seq
    return FeatureTables(
        item_nd=jnp.asarray(l2_normalize_rows(x_nd)),
        sequences_ul=jnp.asarray(sequences_ul),
        lengths_u=jnp.asarray(lengths_u),
    )


def _unit_interval(x: jax.Array) -> jax.Array:
    # Rounding can put a cosine a few ulps outside [-1, 1].
    return jnp.clip(x, 0.0, 1.0)


def future_mask(tables: FeatureTables, requests: RewardRequests) -> jax.Array:
    """bool [B, Lmax]: the user's training items after the request's target, target excluded."""
    history_bh = requests.history_bh
    mask_bh = requests.history_mask_bh & (history_bh != PAD_ITEM)
    target_b = requests.target_b
    seq_bl = tables.sequences_ul[requests.user_b]
    len_b = tables.lengths_u[requests.user_b]
    num_pos, num_hist = seq_bl.shape[1], history_bh.shape[1]
    pos_l = jnp.arange(num_pos)
    # With the target at position t, history slot h (right-aligned) holds seq[t - (H - h)].
    src_lh = pos_l[:, None] - (num_hist - jnp.arange(num_hist))[None, :]
    window_blh = seq_bl[:, jnp.maximum(src_lh, 0)]
    slot_ok_blh = ~mask_bh[:, None, :] | (
        (src_lh >= 0)[None] & (window_blh == history_bh[:, None, :])
    )
    at_target_bl = (
        (seq_bl == target_b[:, None]) & (pos_l[None] < len_b[:, None]) & slot_ok_blh.all(-1)
    )
    target_pos_b = jnp.max(jnp.where(at_target_bl, pos_l[None], -1), axis=1)
    return (
        (target_pos_b[:, None] >= 0)
        & (pos_l[None] > target_pos_b[:, None])
        & (pos_l[None] < len_b[:, None])
        & (seq_bl != target_b[:, None])
    )


def feature_aspects(
    tables: FeatureTables, requests: RewardRequests, items_bg: jax.Array
) -> jax.Array:
    """float32 [B, G, A] evidence (ASPECTS order: profile, future, novelty); NaN = missing.

    Pure jnp, jittable. `requests.judged_b` is not applied here: sparse judging is the reward
    channel's business.
    """
    item_nd = tables.item_nd
    history_bh = requests.history_bh
    mask_bh = requests.history_mask_bh & (history_bh != PAD_ITEM)
    valid_bg = items_bg != PAD_ITEM
    item_bgd = item_nd[jnp.maximum(items_bg, 0)]
    hist_bhd = item_nd[jnp.maximum(history_bh, 0)]

    count_b = mask_bh.sum(-1)
    mean_bd = (hist_bhd * mask_bh[..., None]).sum(1) / jnp.maximum(count_b, 1)[:, None]
    mean_norm_b = jnp.linalg.norm(mean_bd, axis=-1)
    profile_cos_bg = jnp.einsum("bgd,bd->bg", item_bgd, mean_bd) / jnp.maximum(
        mean_norm_b, 1e-12
    )[:, None]
    # Opposite history items can cancel out: a zero mean has no direction to compare with.
    profile_ok_b = (count_b > 0) & (mean_norm_b > 1e-6)
    profile_bg = jnp.where(
        profile_ok_b[:, None], _unit_interval((1.0 + profile_cos_bg) / 2.0), jnp.nan
    )

    hist_cos_bgh = jnp.einsum("bgd,bhd->bgh", item_bgd, hist_bhd)
    max_hist_bg = jnp.max(jnp.where(mask_bh[:, None, :], hist_cos_bgh, -jnp.inf), axis=-1)
    novelty_bg = jnp.where(
        (count_b > 0)[:, None], _unit_interval(1.0 - jnp.maximum(max_hist_bg, 0.0)), jnp.nan
    )

    future_bl = future_mask(tables, requests)
    seq_bld = item_nd[jnp.maximum(tables.sequences_ul[requests.user_b], 0)]
    future_cos_bgl = jnp.einsum("bgd,bld->bgl", item_bgd, seq_bld)
    max_future_bg = jnp.max(jnp.where(future_bl[:, None, :], future_cos_bgl, -jnp.inf), axis=-1)
    future_bg = jnp.where(
        future_bl.any(-1)[:, None], _unit_interval((1.0 + max_future_bg) / 2.0), jnp.nan
    )

    by_aspect = {"profile": profile_bg, "future": future_bg, "novelty": novelty_bg}
    evidence_bga = jnp.stack([by_aspect[a] for a in ASPECTS], axis=-1)
    return jnp.where(valid_bg[..., None], evidence_bga, jnp.nan).astype(jnp.float32)
