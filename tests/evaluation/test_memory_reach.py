"""Memory reach on hand-built transitions and rankings: which targets a memory of k successors
over the last `window` items holds, the three groups, the wider memories' gains, and each
system's recall within them."""

import numpy as np
import pytest

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.evaluation.memory_reach import (
    in_memory,
    memory_items,
    reach_groups,
    reach_report,
)

PAD = -1
# Training transitions over 10 items: 0 -> 1 (3x), 0 -> 2 (2x), 0 -> 3 (1x); 4 -> 5 (1x).
PAIRS = np.array([[0, 1], [0, 1], [0, 1], [0, 2], [0, 2], [0, 3], [4, 5]])
COUNTS = TransitionCounts.from_pairs(PAIRS[:, 0], PAIRS[:, 1], 10)
# Users: last items 0, 0, 0, 4 -> 0 (4 is one back), 7 (no successors).
HISTORY = np.array([[PAD, 9, 0], [PAD, 9, 0], [PAD, 9, 0], [9, 4, 0], [PAD, PAD, 7]])
MASK = HISTORY != PAD
TARGETS = np.array([1, 3, 8, 5, 2])


def test_in_memory_reads_the_top_k_of_each_of_the_last_window_items():
    # k 2: item 0's top two are 1, 2 (3 falls out); window 1 misses user 3's 4 -> 5.
    np.testing.assert_array_equal(in_memory(HISTORY, MASK, TARGETS, COUNTS, 2, 1),
                                  [True, False, False, False, False])
    np.testing.assert_array_equal(in_memory(HISTORY, MASK, TARGETS, COUNTS, 3, 2),
                                  [True, True, False, True, False])
    # A window wider than the history reads the real items only.
    np.testing.assert_array_equal(in_memory(HISTORY, MASK, TARGETS, COUNTS, 3, 9),
                                  [True, True, False, True, False])
    with pytest.raises(ValueError, match="k and window must be >= 1"):
        in_memory(HISTORY, MASK, TARGETS, COUNTS, 0, 1)


def test_memory_items_are_source_major_and_padded():
    np.testing.assert_array_equal(memory_items(HISTORY[3:], MASK[3:], COUNTS, 2, 2),
                                  [[1, 2, 5, -1], [-1, -1, -1, -1]])


def test_groups_partition_the_users():
    groups = reach_groups(HISTORY, MASK, TARGETS, COUNTS, 2, 1)
    np.testing.assert_array_equal(groups["in_memory"], [True, False, False, False, False])
    np.testing.assert_array_equal(groups["follows_outside"], [False, True, False, False, False])
    np.testing.assert_array_equal(groups["outside"], [False, False, True, True, True])
    assert sum(g.astype(int) for g in groups.values()).tolist() == [1] * 5


def test_report_scores_each_system_within_each_group_and_gain():
    hit_all = np.stack([TARGETS, np.full(5, 9)], 1)  # every target ranked first
    first_only = np.array([[1, 9], [9, 3], [9, 9], [9, 9], [9, 9]])  # users 0, 1 hit at 1, 2
    report = reach_report({"a": (hit_all, TARGETS), "b": (first_only, TARGETS)},
                          HISTORY, MASK, TARGETS, COUNTS, 2, 1, wider=[(3, 2)], top=2)
    groups = report["groups"]
    assert report["num_users"] == 5 and (report["k"], report["window"]) == (2, 1)
    assert [groups[g]["share"] for g in ("in_memory", "follows_outside", "outside")] == \
        [0.2, 0.2, 0.6]
    assert groups["in_memory"]["a"]["recall@2"] == 1.0 == groups["in_memory"]["b"]["recall@2"]
    assert groups["follows_outside"]["b"]["ndcg@2"] == pytest.approx(1 / np.log2(3))
    assert groups["outside"]["b"]["recall@2"] == 0.0
    # Memory (k 2, window 1): users 0-2 hold 1, 2; user 3 (last item 0) too; user 4 nothing.
    # a's top 2 holds the target then 9: user 0's 1 is a memory item, user 1's 3 is not.
    assert groups["in_memory"]["a"]["memory_slots@2"] == 1.0
    assert groups["follows_outside"]["a"]["memory_slots@2"] == 0.0
    assert groups["outside"]["b"]["memory_slots@2"] == 0.0
    # k 3 over 2 items reaches user 1 (follows_outside) and user 3 (outside).
    gains = {g: groups[g]["gains"]["k3_w2"] for g in groups}
    assert gains["follows_outside"]["share"] == 0.2 and gains["outside"]["share"] == 0.2
    assert gains["outside"]["a"]["recall@2"] == 1.0 and gains["outside"]["b"]["recall@2"] == 0.0
    assert gains["in_memory"]["share"] == 0.0 and np.isnan(gains["in_memory"]["a"]["recall@2"])
    with pytest.raises(ValueError, match="system 'c': its test targets differ"):
        reach_report({"c": (hit_all, TARGETS[::-1])}, HISTORY, MASK, TARGETS, COUNTS, 2, 1)
