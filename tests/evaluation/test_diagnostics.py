"""Ranking diagnostics on hand-built rankings, every expected value computed by hand."""

import math

import numpy as np
import pytest

from sgrec_jax.evaluation.diagnostics import (
    TrainingStatistics,
    popularity_buckets,
    ranking_diagnostics,
)
from sgrec_jax.train.evaluate import Rankings, ranking_report

# Transitions 0->1, 1->2 x2, 3->1, 4->1, 2->3; training-target counts 0: 0, 1: 3, 2: 2, 3: 1,
# 4: 0, so the 1% most frequent (ceil(0.05) = 1 item) is item 1.
STATS = TrainingStatistics.from_sequences(
    [np.array(s) for s in ([0, 1, 2], [3, 1, 2], [4, 1], [2, 3])], num_items=5
)
HISTORY = np.array([[-1, -1, 0], [-1, 0, 1], [-1, 2, 4], [-1, 1, 4], [0, 1, 2]])
TARGETS = np.array([1, 2, 1, 0, 4])  # frequencies 3, 2, 3, 0, 0


def _ranked(*rows):
    return np.array([list(r) + [-1] * (10 - len(r)) for r in rows])


RANKED = _ranked(
    [1, 2],  # u0: 0 -> 1 follows; hit at rank 0
    [0, 3, 2],  # u1: 1 -> 2 follows; hit at rank 2 (ndcg 0.5)
    [4, 3, 7],  # u2: 4 -> 1 follows; miss (7 is outside the catalog: not a real slot)
    [0, 1, 4],  # u3: 4 -> 0 does not follow; hit at rank 0
    [2, 1, 0],  # u4: 2 -> 4 does not follow; miss
)
CODES = np.array([[5, 0], [5, 1], [7, 0], [8, 0], [8, 1]])


def test_training_statistics():
    np.testing.assert_array_equal(STATS.target_count_n, [0, 3, 2, 1, 0])
    np.testing.assert_array_equal(STATS.transition_keys, [0 * 5 + 1, 1 * 5 + 2, 2 * 5 + 3,
                                                          3 * 5 + 1, 4 * 5 + 1])
    np.testing.assert_array_equal(STATS.follows([0, 1, 2, -1, 4, 1], [1, 2, 4, 1, 1, 0]),
                                  [True, True, False, False, True, False])
    np.testing.assert_array_equal(STATS.transition_counts([0, 1, 2, -1, 4, 1], [1, 2, 4, 1, 1, 0]),
                                  [1, 2, 0, 0, 1, 0])


def test_follows_split_history_popular_and_first_codes():
    diag = ranking_diagnostics(RANKED, TARGETS, HISTORY, STATS, codes_nl=CODES, num_buckets=2)
    assert diag["diag/follows_share"] == pytest.approx(3 / 5)
    assert diag["diag/recall@10|follows"] == pytest.approx(2 / 3)
    assert diag["diag/ndcg@10|follows"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert diag["diag/recall@10|not_follows"] == pytest.approx(1 / 2)
    assert diag["diag/ndcg@10|not_follows"] == pytest.approx(1 / 2)
    # 13 real slots; in the history: u1 0; u2 4; u3 1, 4; u4 2, 1, 0 (PAD never matches).
    assert diag["diag/history_share@10"] == pytest.approx(7 / 13)
    assert diag["diag/popular_share@10"] == pytest.approx(3 / 13)  # item 1 in u0, u3, u4
    assert diag["diag/first_codes@10"] == 3  # codes 5, 7, 8 (item 7 has none: not counted)
    # Follows by training count: once = u0 (0 -> 1, hit), u2 (4 -> 1, miss); few = u1 (1 -> 2
    # twice, hit); often: nobody.
    assert diag["diag/recall@10|follows_once"] == pytest.approx(1 / 2)
    assert diag["diag/follows_once_share"] == pytest.approx(2 / 5)
    assert diag["diag/recall@10|follows_few"] == pytest.approx(1.0)
    assert diag["diag/follows_few_share"] == pytest.approx(1 / 5)
    assert math.isnan(diag["diag/recall@10|follows_often"])
    assert diag["diag/follows_often_share"] == 0.0


def test_follows_split_by_training_count_reaches_often():
    # 0 -> 1 four times, 0 -> 2 three times, 0 -> 3 once.
    stats = TrainingStatistics.from_sequences(
        [np.array(s) for s in ([0, 1], [0, 1], [0, 1], [0, 1], [0, 2], [0, 2], [0, 2], [0, 3])],
        num_items=4,
    )
    history = np.array([[0], [0], [0], [0], [1]])
    targets = np.array([1, 1, 2, 3, 0])
    ranked = _ranked([2, 3], [1], [2], [0], [0])  # hits: u1 (often), u2 (few), u4 (not follows)
    diag = ranking_diagnostics(ranked, targets, history, stats)
    assert diag["diag/recall@10|follows_often"] == pytest.approx(1 / 2)
    assert diag["diag/follows_often_share"] == pytest.approx(2 / 5)
    assert diag["diag/recall@10|follows_few"] == pytest.approx(1.0)
    assert diag["diag/recall@10|follows_once"] == pytest.approx(0.0)
    assert diag["diag/follows_once_share"] == pytest.approx(1 / 5)
    assert diag["diag/recall@10|not_follows"] == pytest.approx(1.0)


def test_two_popularity_buckets():
    # Median of the frequencies (3, 2, 3, 0, 0) is 2: q1 = {u1, u3, u4}, q2 = {u0, u2}.
    diag = ranking_diagnostics(RANKED, TARGETS, HISTORY, STATS, num_buckets=2)
    assert diag["diag/recall@10|pop_q1"] == pytest.approx(2 / 3)
    assert (diag["diag/pop_q1_share"], diag["diag/pop_q1_freq_min"],
            diag["diag/pop_q1_freq_max"]) == pytest.approx((0.6, 0, 2))
    assert diag["diag/recall@10|pop_q2"] == pytest.approx(1 / 2)
    assert (diag["diag/pop_q2_share"], diag["diag/pop_q2_freq_min"],
            diag["diag/pop_q2_freq_max"]) == pytest.approx((0.4, 3, 3))
    assert "diag/first_codes@10" not in diag and "diag/recall@10|pop_q3" not in diag


def test_five_buckets_with_ties_leave_some_empty():
    # Sorted frequencies 0, 0, 2, 3, 3: edges at 20/40/60/80% are 0, 1.2, 2.4, 3.
    np.testing.assert_array_equal(popularity_buckets(np.array([3, 2, 3, 0, 0]), 5),
                                  [3, 2, 3, 0, 0])
    diag = ranking_diagnostics(RANKED, TARGETS, HISTORY, STATS)
    shares = [diag[f"diag/pop_q{q}_share"] for q in range(1, 6)]
    assert shares == pytest.approx([0.4, 0.0, 0.2, 0.4, 0.0])
    recalls = [diag[f"diag/recall@10|pop_q{q}"] for q in range(1, 6)]
    assert recalls[0] == 0.5 and recalls[2] == 1.0 and recalls[3] == 0.5
    assert math.isnan(recalls[1]) and math.isnan(recalls[4])
    assert math.isnan(diag["diag/pop_q2_freq_min"])


def test_an_empty_follows_group_is_nan():
    diag = ranking_diagnostics(RANKED[3:], TARGETS[3:], HISTORY[3:], STATS)
    assert diag["diag/follows_share"] == 0.0
    assert math.isnan(diag["diag/recall@10|follows"])
    assert diag["diag/recall@10|not_follows"] == 0.5


def test_ranking_report_adds_the_diagnostics_when_given_history_and_stats():
    rankings = Rankings(np.arange(5), TARGETS, RANKED, np.zeros(RANKED.shape))
    plain = ranking_report(rankings, 5)
    assert not any(key.startswith("diag/") for key in plain)
    full = ranking_report(rankings, 5, history_uh=HISTORY, stats=STATS, codes_nl=CODES)
    assert full["diag/first_codes@10"] == 3 and full["recall@10"] == plain["recall@10"] == 0.6
    with pytest.raises(ValueError, match="need both history_uh and stats"):
        ranking_report(rankings, 5, history_uh=HISTORY)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="history must be"):
        ranking_diagnostics(RANKED, TARGETS, HISTORY[:3], STATS)
    with pytest.raises(ValueError, match=r"items must be \[U, K >= 10\]"):
        ranking_diagnostics(RANKED[:, :5], TARGETS, HISTORY, STATS)
    with pytest.raises(ValueError, match="codes_nl must be"):
        ranking_diagnostics(RANKED, TARGETS, HISTORY, STATS, codes_nl=CODES[:3])
