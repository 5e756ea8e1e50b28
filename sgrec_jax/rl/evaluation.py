"""Evaluation of a generator policy for the RL stage: beam-search rankings, their ranking metrics
and the mean reward of each user's top 10 under evaluation reward channels.

Result names (without the "rl/" prefix the stage adds): recall@5, ndcg@5, recall@10, ndcg@10,
and recall@20, ndcg@20 when eval.beam_size >= 20 (the lists are then ranked 20 deep; their top
10 are the same as a 10-deep ranking's, since beam search returns its final beams in order),
valid_rate and coverage@10 (of the top 10), ecpm@10 ("ecpm_eval": a pCTR model trained
independently of the reward's, simulated bids), semantic@10 (rl.semantic_eval_channel), and
true_business@10 and true_relevance@10 on the synthetic world (each: the mean over users of the
mean over their top 10). Given the training statistics, also the ranking diagnostics the SFT
stage reports ("diag/...", sgrec_jax/evaluation/diagnostics.py): recall by whether the target
follows the last history item and by target-popularity quintile, history and popular shares,
first SID codes, so an RL policy that degenerates (e.g. onto popular items) shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.files import write_npz
from sgrec_jax.data.pipeline import eval_batches
from sgrec_jax.data.split import Examples
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.rewards.channel import RewardChannel, RewardRequests, reward_tensor
from sgrec_jax.train.evaluate import (
    PROTOCOL_KS,
    Rankings,
    rank_with_generator,
    ranking_report,
    scalar_metrics,
)

EVAL_BUSINESS = "ecpm_eval"
TRUTH_AT_10 = {"true_business": "true_business@10", "true_relevance": "true_relevance@10"}
TOP_K = 10
DEEP_K = 20  # recall@20 / ndcg@20, reported when eval.beam_size allows ranking this deep.
# The ranking metrics `evaluate_policy` reports (beside the reward metrics of reward_names).
RANKING_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10", "valid_rate")
DEEP_METRICS = (f"recall@{DEEP_K}", f"ndcg@{DEEP_K}")


def ranking_depth(config: ConfigDict) -> int:
    """How deep evaluate_policy ranks: DEEP_K when eval.beam_size >= DEEP_K, else TOP_K."""
    return DEEP_K if config.eval.beam_size >= DEEP_K else TOP_K


@jax.jit
def _user_means(channels: Sequence[RewardChannel], requests: RewardRequests, items_bk: jax.Array,
                logprob_bk: jax.Array) -> jax.Array:
    rewards_bkc = reward_tensor(channels, requests, items_bk, logprob_bk)
    return jnp.nanmean(rewards_bkc, axis=1)


def reward_per_user(channels: Sequence[RewardChannel], examples: Examples, rankings: Rankings,
                    *, k: int, batch_size: int) -> np.ndarray:
    """float64 [U, C]: per user (the order of `examples` and `rankings`) and channel, the mean
    reward of their top-k ranked items; NaN where all k are NaN. Every request is judged
    (semantic channels score all of them)."""
    means = []
    for start, batch in zip(range(0, len(examples), batch_size),
                            eval_batches(examples, batch_size=batch_size), strict=True):
        rows = np.minimum(np.arange(start, start + batch_size), len(examples) - 1)
        requests = RewardRequests.from_batch(batch)
        user_means = _user_means(channels, requests, rankings.items_uk[rows, :k],
                                 rankings.scores_uk[rows, :k])
        means.append(np.asarray(user_means, np.float64)[batch["valid"]])
    return np.concatenate(means)


def reward_names(config: ConfigDict) -> dict[str, str]:
    """Result name -> the eval channel that scores it: ecpm@10, semantic@10 (+ the truth)."""
    return {"ecpm@10": EVAL_BUSINESS, "semantic@10": config.rl.semantic_eval_channel,
            **{name: channel for channel, name in TRUTH_AT_10.items()}}


def selectable_metrics(config: ConfigDict) -> tuple[str, ...]:
    """The validation metrics rl.best_metric may name: the ranking metrics (recall@20 and
    ndcg@20 when eval.beam_size >= 20), ecpm@10, semantic@10, and the ground-truth ones on the
    synthetic world."""
    deep = DEEP_METRICS if ranking_depth(config) == DEEP_K else ()
    truth = tuple(TRUTH_AT_10.values()) if config.data.format == "synthetic" else ()
    return (*RANKING_METRICS, *deep, "ecpm@10", "semantic@10", *truth)


def test_rewards(config: ConfigDict, channels: Sequence[RewardChannel], examples: Examples,
                 rankings: Rankings) -> dict[str, np.ndarray]:
    """Result name (reward_names, of the channels given) -> the users' top-10 mean reward [U]."""
    per_user = reward_per_user(channels, examples, rankings, k=TOP_K,
                               batch_size=config.eval.batch_size)
    index = {c.name: i for i, c in enumerate(channels)}
    return {name: per_user[:, index[channel]]
            for name, channel in reward_names(config).items() if channel in index}


def save_test_rewards(path: str | os.PathLike, users_u: np.ndarray,
                      values: dict[str, np.ndarray]) -> None:
    """DIR/rl/test_rewards.npz: users_u and the per-user rewards by result name, so eCPM@10 and
    semantic@10 can be compared user by user (evaluation/paired.py)."""
    write_npz(path, users_u=users_u, **values)


def evaluate_policy(
    model: nnx.Module, catalog: Any, examples: Examples, channels: Sequence[RewardChannel],
    config: ConfigDict, num_items: int, *, stats: TrainingStatistics | None = None,
    codes_nl: np.ndarray | None = None,
) -> tuple[Rankings, dict[str, float], dict[str, np.ndarray]]:
    """Beam-search rankings of `examples` (ranking_depth(config) deep), their metrics by result
    name (no "rl/" prefix) and the per-user rewards behind the reward metrics (test_rewards).

    With the run's training statistics (and the SID table codes_nl [N, L] for first_codes@10)
    the metrics include the ranking diagnostics of the examples' histories; validation during
    training passes neither, as it selects on the protocol metrics only.
    """
    depth = ranking_depth(config)
    rankings = rank_with_generator(model, catalog, examples, beam_size=config.eval.beam_size,
                                   k=depth, batch_size=config.eval.batch_size,
                                   level_scoring=config.eval.level_scoring)
    ks = (*PROTOCOL_KS, DEEP_K) if depth == DEEP_K else PROTOCOL_KS
    report = scalar_metrics(ranking_report(
        rankings, num_items, history_uh=None if stats is None else examples.history,
        stats=stats, codes_nl=codes_nl, ks=ks,
    ))
    per_user = test_rewards(config, channels, examples, rankings)
    with np.errstate(invalid="ignore"):
        report.update({name: float(np.nanmean(values)) for name, values in per_user.items()})
    return rankings, report, per_user
