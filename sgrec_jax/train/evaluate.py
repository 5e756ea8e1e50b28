"""Evaluation of recommenders on a split, exactly as the protocol says.

Full ranking over the whole catalog, one target per user: the generator ranks by constrained
beam search (beam >= K), SASRec by its scores over every item. Both return the same record:
Recall/NDCG@5,10, catalog coverage, valid-output rate, optionally the ranking diagnostics, and the
per-user ranked lists (saved for later analysis and paired bootstrap).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from sgrec_jax.core.files import read_npz, write_npz
from sgrec_jax.data.pipeline import eval_batches
from sgrec_jax.data.shards import ShardedExamples
from sgrec_jax.data.split import Examples
from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.evaluation.diagnostics import TrainingStatistics, ranking_diagnostics
from sgrec_jax.evaluation.metrics import (
    PER_USER,
    catalog_coverage,
    ranking_metrics,
    valid_rate,
)
from sgrec_jax.sid.catalog import Catalog


@dataclasses.dataclass(frozen=True)
class Rankings:
    """Ranked lists of one split: items_uk int32 [U, K] best first (-1 = no item)."""

    users_u: np.ndarray
    targets_u: np.ndarray
    items_uk: np.ndarray
    scores_uk: np.ndarray
    argmax_invalid_u: np.ndarray | None = None

    def save(self, path: str | os.PathLike) -> None:
        arrays = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        write_npz(path, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Rankings:
        """The rankings `save` wrote."""
        arrays = read_npz(path)
        return cls(**{f.name: arrays[f.name] for f in dataclasses.fields(cls) if f.name in arrays})


def subsample(examples: Examples | ShardedExamples, max_examples: int, seed: int) -> Examples:
    """A fixed, seeded subset (for frequent validation during training); all if max_examples
    is <= 0 or not below their number. Of shards only the chosen rows are read, so a subset of
    a split too big for memory costs its own size; the rows are those an in-memory split of the
    same length gives."""
    if max_examples <= 0 or len(examples) <= max_examples:
        return examples.to_examples() if isinstance(examples, ShardedExamples) else examples
    rows = np.sort(np.random.default_rng(seed).choice(len(examples), max_examples, replace=False))
    if isinstance(examples, ShardedExamples):
        batch = examples.read(rows)
        return Examples(batch["history"], batch["target"], batch["user"])
    return Examples(examples.history[rows], examples.target[rows], examples.user[rows])


def rank_with_generator(
    model: nnx.Module, catalog: Catalog, examples: Examples, *, beam_size: int, k: int,
    batch_size: int, level_scoring: str = "renormalized",
) -> Rankings:
    """Top-k items per example by constrained beam search (beam_size >= k; level_scoring as in
    `constrained_beam_search`)."""
    if beam_size < k:
        raise ValueError(f"beam_size {beam_size} must be >= k {k} for full ranking")
    items, scores, invalid = [], [], []
    for batch in eval_batches(examples, batch_size=batch_size):
        result = constrained_beam_search_jit(
            model, catalog, batch["history"], batch["history_mask"], beam_size=beam_size,
            num_return=k, level_scoring=level_scoring,
        )
        result = jax.device_get(result)
        keep = batch["valid"]
        items.append(result.items_bk[keep])
        scores.append(result.logprob_bk[keep])
        invalid.append(result.argmax_invalid_b[keep])
    return Rankings(examples.user, examples.target, np.concatenate(items),
                    np.concatenate(scores), np.concatenate(invalid))


def rank_with_scores(model: nnx.Module, examples: Examples, *, k: int, batch_size: int) -> Rankings:
    """Top-k items per example from a model's `scores` over the whole catalog (e.g. SASRec)."""

    @nnx.jit
    def top_k(model, history_bh, mask_bh):
        scores_bn = model.scores(history_bh, mask_bh, deterministic=True)
        return jax.lax.top_k(scores_bn, k)

    items, scores = [], []
    for batch in eval_batches(examples, batch_size=batch_size):
        values, indices = jax.device_get(top_k(model, batch["history"], batch["history_mask"]))
        items.append(indices[batch["valid"]])
        scores.append(values[batch["valid"]])
    return Rankings(examples.user, examples.target, np.concatenate(items).astype(np.int32),
                    np.concatenate(scores))


PROTOCOL_KS = (5, 10)  # The protocol's cut-offs; coverage and valid_rate are of the top 10.


def ranking_report(
    rankings: Rankings,
    num_items: int,
    *,
    history_uh: np.ndarray | None = None,
    stats: TrainingStatistics | None = None,
    codes_nl: np.ndarray | None = None,
    ks: Sequence[int] = PROTOCOL_KS,
) -> dict[str, Any]:
    """Metrics by name (recall@5, ndcg@5, recall@10, ndcg@10, coverage@10, valid_rate, ...).

    recall@k and ndcg@k for each k in `ks` (each <= the lists' length K; e.g. (5, 10, 20) for
    lists ranked 20 deep). coverage@10 and valid_rate are of the top 10 whatever K is, so a
    deeper list leaves them comparable with the protocol's 10-item lists.
    With the rankings' histories (history_uh [U, H], rows as in `rankings`) and the training
    statistics, also the ranking diagnostics ("diag/...", sgrec_jax/evaluation/diagnostics.py;
    first_codes@10 needs the SID table codes_nl [N, L]).
    """
    if (history_uh is None) != (stats is None):
        raise ValueError("ranking diagnostics need both history_uh and stats (or neither)")
    report: dict[str, Any] = ranking_metrics(rankings.items_uk, rankings.targets_u, ks=ks)
    report["coverage@10"] = catalog_coverage(rankings.items_uk, num_items, 10)
    report["valid_rate"] = valid_rate(rankings.items_uk[:, :10], num_items)
    if rankings.argmax_invalid_u is not None:
        report["argmax_invalid_rate"] = float(np.mean(rankings.argmax_invalid_u))
    report["num_users"] = int(len(rankings.targets_u))
    if stats is not None:
        if stats.num_items != num_items:
            raise ValueError(f"stats are of {stats.num_items} items, the catalog has {num_items}")
        report.update(ranking_diagnostics(
            rankings.items_uk, rankings.targets_u, history_uh, stats, codes_nl=codes_nl
        ))
    return report


def scalar_metrics(report: Mapping[str, Any]) -> dict[str, float]:
    return {k: v for k, v in report.items() if k != PER_USER}
