"""Product-of-experts rerank: a SID generator's exact log-probs times item-transition counts.

The generator and the transition-counting floor (`models.counting.ItemTransition`) are good at
different requests: counting wins when the target directly follows the last history item in
training, the generator on everything else. This module combines them per request:

1. Candidates: the generator's constrained beam top-B items, then the counting model's top-M
   items with a positive transition score that the beam does not already hold (no popularity
   fill: an item the counts cannot score has nothing to add). Padding is -1.
2. Each candidate gets the generator's exact log p(item | history): teacher-forced logits, each
   level's log-softmax restricted to the trie's allowed codes after the item's own prefix (the
   policy beam search decodes, `decoding.logprob`), summed over levels. So a beam item's exact
   log-prob is its beam score up to float rounding, and items the beam missed are scored on the
   same scale.
3. Fused score = log p_gen(item) + lam * log1p(s(item)), s the weighted transition score (0 for
   candidates without counts). lam = 0 is the generator alone, reranked exactly; a large lam
   orders the items with counts first, by count, the generator breaking ties.
4. Ranking by fused score, best first, ties in candidate order (beam order first); nothing is
   excluded (the generator's rankings exclude nothing either), and rows with fewer than k
   candidates end in -1 / -inf, as beam search pads.

`select_lambda` picks lam on validation requests; the caller reports test metrics of that value
only (experiments/fusion.py). Everything but `candidate_logprobs` is numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
from flax import nnx

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.decoding.beam_search import level_log_probs
from sgrec_jax.decoding.logprob import SidPolicy, path_masks, token_logprob
from sgrec_jax.models.counting import ItemTransition
from sgrec_jax.sid.catalog import Catalog


def check_lambdas(lams: Sequence[float]) -> tuple[float, ...]:
    """The grid as floats; ValueError unless it is non-empty, finite, >= 0 and distinct."""
    values = tuple(float(lam) for lam in lams)
    if not values:
        raise ValueError("the lam grid is empty")
    bad = [lam for lam in values if not np.isfinite(lam) or lam < 0]
    if bad:
        raise ValueError(f"every lam must be a finite number >= 0, got {bad[0]} in {list(values)}")
    if len(set(values)) != len(values):
        raise ValueError(f"the lam grid repeats a value: {list(values)}")
    return values


def counting_candidates(
    counting: ItemTransition, history_uh: np.ndarray, m: int
) -> np.ndarray:
    """int32 [U, m]: each request's top-m items by transition score (ties by popularity, as
    `ItemTransition.rank`), only those with a positive score; -1 after them."""
    if m < 0:
        raise ValueError(f"the number of counting candidates must be >= 0, got {m}")
    if m == 0:
        return np.full((len(history_uh), 0), PAD_ITEM, np.int32)
    items_um, scores_um = counting.rank(history_uh, m, exclude_history=False)
    return np.where(scores_um > 0, items_um, PAD_ITEM).astype(np.int32)


def candidate_union(beam_items_ub: np.ndarray, count_items_um: np.ndarray) -> np.ndarray:
    """int32 [U, B + M]: per row the beam's items in beam order, then the counting items the
    beam does not hold in counting order, packed to the left; -1 after them."""
    beam_items_ub, count_items_um = np.asarray(beam_items_ub), np.asarray(count_items_um)
    if len(beam_items_ub) != len(count_items_um):
        raise ValueError(f"{len(beam_items_ub)} beam rows but {len(count_items_um)} counting rows")
    both_uc = np.concatenate([beam_items_ub, count_items_um], axis=1).astype(np.int32)
    in_beam_um = (count_items_um[:, :, None] == beam_items_ub[:, None, :]).any(-1)
    keep_uc = both_uc != PAD_ITEM
    keep_uc[:, beam_items_ub.shape[1]:] &= ~in_beam_um
    # A stable sort of "not kept" packs the kept entries left, in their order.
    order_uc = np.argsort(~keep_uc, axis=1, kind="stable")
    return np.where(np.take_along_axis(keep_uc, order_uc, 1),
                    np.take_along_axis(both_uc, order_uc, 1), PAD_ITEM).astype(np.int32)


def transition_scores(score_un: scipy.sparse.spmatrix, items_uc: np.ndarray) -> np.ndarray:
    """float64 [U, C]: score_un[u, items_uc[u, c]] (`ItemTransition.scores`), 0 for padding."""
    items_uc = np.asarray(items_uc)
    rows_uc = np.broadcast_to(np.arange(len(items_uc))[:, None], items_uc.shape)
    real_uc = items_uc != PAD_ITEM
    score_un = scipy.sparse.csr_matrix(score_un)
    values = np.asarray(score_un[rows_uc[real_uc], items_uc[real_uc]]).reshape(-1)
    out_uc = np.zeros(items_uc.shape, np.float64)
    out_uc[real_uc] = values
    return out_uc


def _candidate_logprob(
    model: SidPolicy, catalog: Catalog, history_bh: jax.Array, history_mask_bh: jax.Array,
    codes_bcl: jax.Array, real_bc: jax.Array, level_scoring: str,
) -> jax.Array:
    memory = model.encode(history_bh, history_mask_bh, deterministic=True)
    logits_bclv = model.sequence_logits(memory, codes_bcl)
    # Per level, the scoring beam search uses, over the codes the trie allows after each SID's
    # own prefix ("renormalized" is `constrained_log_softmax` exactly).
    logp_bclv = level_log_probs(logits_bclv, path_masks(catalog, codes_bcl), level_scoring)
    return jnp.where(real_bc, token_logprob(logp_bclv, codes_bcl).logprob_bk, -jnp.inf)


_candidate_logprob_jit = nnx.jit(_candidate_logprob, static_argnames=("level_scoring",))


def candidate_logprobs(
    model: SidPolicy, catalog: Catalog, codes_nl: np.ndarray, history_uh: np.ndarray,
    items_uc: np.ndarray, *, batch_size: int, level_scoring: str = "renormalized",
) -> np.ndarray:
    """float32 [U, C]: the generator's exact log p(item | history) of each candidate, -inf for
    padding (-1).

    Args:
      model: the generator; catalog: its SID trie; codes_nl: int [N, L] its SID table.
      history_uh: int [U, H] right-aligned histories (PAD_ITEM on the left), as `split.Examples`.
      items_uc: int [U, C] candidate items per request, -1 for padding.
      batch_size: requests per jitted call (the last batch is padded: one compiled shape).
      level_scoring: how levels are scored, as in `constrained_beam_search`.
    """
    history_uh, items_uc = np.asarray(history_uh), np.asarray(items_uc)
    if history_uh.shape[0] != items_uc.shape[0]:
        raise ValueError(f"{history_uh.shape[0]} histories but {items_uc.shape[0]} candidate rows")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    codes_nl = np.asarray(codes_nl, np.int32)
    real_uc = items_uc != PAD_ITEM
    if ((items_uc[real_uc] < 0) | (items_uc[real_uc] >= len(codes_nl))).any():
        raise ValueError(f"candidate items must be in 0..{len(codes_nl) - 1} or -1")
    num, width = items_uc.shape
    if num == 0 or width == 0:
        return np.full((num, width), -np.inf, np.float32)
    # Padding is scored as item 0 (a valid SID, so no -1 code enters the trie walk), then masked.
    codes_ucl = codes_nl[np.where(real_uc, items_uc, 0)]
    out = []
    for start in range(0, num, batch_size):
        rows = slice(start, start + batch_size)
        pad = batch_size - len(history_uh[rows])
        history_bh = np.pad(history_uh[rows], ((0, pad), (0, 0)), constant_values=PAD_ITEM)
        codes_bcl = np.pad(codes_ucl[rows], ((0, pad), (0, 0), (0, 0)))
        real_bc = np.pad(real_uc[rows], ((0, pad), (0, 0)))
        logp_bc = _candidate_logprob_jit(
            model, catalog, history_bh.astype(np.int32), history_bh != PAD_ITEM, codes_bcl,
            real_bc, level_scoring=level_scoring,
        )
        out.append(np.asarray(jax.device_get(logp_bc))[: batch_size - pad])
    return np.concatenate(out).astype(np.float32)


def fused_scores(logp_uc: np.ndarray, count_uc: np.ndarray, lam: float) -> np.ndarray:
    """float64 [U, C]: log p_gen + lam * log1p(s); -inf where log p_gen is -inf (padding)."""
    (lam,) = check_lambdas([lam])
    logp_uc, count_uc = np.asarray(logp_uc, np.float64), np.asarray(count_uc, np.float64)
    if (count_uc < 0).any():
        raise ValueError("transition scores must be >= 0")
    bonus_uc = lam * np.log1p(count_uc) if lam else 0.0  # lam = 0: exactly the generator
    return np.where(np.isfinite(logp_uc), logp_uc + bonus_uc, -np.inf)


def fused_ranking(
    items_uc: np.ndarray, logp_uc: np.ndarray, count_uc: np.ndarray, lam: float, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(items_uk int32, scores_uk float32): the top k candidates by fused score, best first,
    ties in candidate order; -1 / -inf where a row has fewer than k candidates."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    items_uc = np.asarray(items_uc)
    score_uc = fused_scores(logp_uc, count_uc, lam)
    score_uc = np.where(items_uc == PAD_ITEM, -np.inf, score_uc)
    if items_uc.shape[1] < k:
        pad = ((0, 0), (0, k - items_uc.shape[1]))
        items_uc = np.pad(items_uc, pad, constant_values=PAD_ITEM)
        score_uc = np.pad(score_uc, pad, constant_values=-np.inf)
    order_uk = np.argsort(-score_uc, axis=1, kind="stable")[:, :k]
    score_uk = np.take_along_axis(score_uc, order_uk, 1)
    items_uk = np.where(np.isfinite(score_uk), np.take_along_axis(items_uc, order_uk, 1),
                        PAD_ITEM)
    return items_uk.astype(np.int32), score_uk.astype(np.float32)


def select_lambda(
    curve: Mapping[float, Mapping[str, Any]], metric: str = "ndcg@10"
) -> float:
    """The lam whose report has the highest `metric` (curve: {lam: report}); ties go to the
    smaller lam (closest to the generator alone)."""
    if not curve:
        raise ValueError("no lam to select from")
    missing = [lam for lam, report in curve.items() if metric not in report]
    if missing:
        raise ValueError(f"the report of lam {missing[0]} has no {metric!r}")
    return min(curve, key=lambda lam: (-float(curve[lam][metric]), lam))
