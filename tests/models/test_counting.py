"""The counting baselines on a hand-built catalog, every expected list written out by hand."""

import numpy as np
import pytest

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.models.counting import (
    ItemTransition,
    Popularity,
    popularity_order,
    training_target_counts,
)

# Six items. Transitions: 0->1 x2, 1->2 x3, 1->3, 4->1, 4->3, 2->0, 2->3 x2, 3->5.
# Training-target counts: item 0: 1, 1: 3, 2: 3, 3: 4, 4: 0, 5: 1, so the popularity order is
# 3, 1, 2, 0, 5, 4 (0 before 5: equal counts, lower index first).
SEQUENCES = [
    np.array(s) for s in
    ([0, 1, 2], [0, 1, 3], [1, 2], [4, 1, 2], [2, 0], [2, 3], [2, 3, 5], [5], [4, 3])
]
NUM_ITEMS = 6
HISTORY = np.array([
    [-1, -1, 0, 1],  # A
    [-1, -1, -1, 2],  # B
    [-1, 2, 4, 3],  # C
    [-1, -1, -1, 5],  # D
    [0, 1, 4, 5],  # E
])


def test_counts_and_popularity_order():
    counts = training_target_counts(SEQUENCES, NUM_ITEMS)
    np.testing.assert_array_equal(counts, [1, 3, 3, 4, 0, 1])
    np.testing.assert_array_equal(popularity_order(counts), [3, 1, 2, 0, 5, 4])


def test_popularity_gives_everyone_the_popularity_order():
    items, scores = Popularity.fit(SEQUENCES, NUM_ITEMS).rank(HISTORY, 5)
    np.testing.assert_array_equal(items, [[3, 1, 2, 0, 5]] * 5)
    np.testing.assert_array_equal(scores, [[4, 3, 3, 1, 1]] * 5)
    assert items.dtype == np.int32 and scores.dtype == np.float32


def test_popularity_can_skip_history_items_and_runs_out_of_catalog():
    items, _ = Popularity.fit(SEQUENCES, NUM_ITEMS).rank(HISTORY[2:3], 5, exclude_history=True)
    np.testing.assert_array_equal(items, [[1, 0, 5, -1, -1]])  # C's history holds 2, 3 and 4
    # A history of the four most popular items: the list starts after them.
    items, _ = Popularity.fit(SEQUENCES, NUM_ITEMS).rank(np.array([[3, 1, 2, 0]]), 2,
                                                         exclude_history=True)
    np.testing.assert_array_equal(items, [[5, 4]])


def test_item_transition_scores_ties_and_fill():
    model = ItemTransition.fit(SEQUENCES, NUM_ITEMS)  # weights 1, 0.5, 0.25
    items, scores = model.rank(HISTORY, 5)
    expected = [
        # A: 1*T[1] gives 2: 3, 3: 1; 0.5*T[0] gives 1: 1. 3 and 1 tie at 1: 3 is more popular
        # (the higher index goes first); then the popular items not listed: 0, 5.
        ([2, 3, 1, 0, 5], [3, 1, 1, 0, 0]),
        # B: T[2] gives 3: 2, 0: 1; then 1, 2, 5 by popularity.
        ([3, 0, 1, 2, 5], [2, 1, 0, 0, 0]),
        # C: 1*T[3] = {5: 1}, 0.5*T[4] = {1: .5, 3: .5}, 0.25*T[2] = {0: .25, 3: .5}: 3 (1.0)
        # ties with 5 and wins by popularity, then 1 (.5), 0 (.25); 2 fills.
        ([3, 5, 1, 0, 2], [1, 1, 0.5, 0.25, 0]),
        # D: item 5 is never followed: the popularity order (0 before 5 by index).
        ([3, 1, 2, 0, 5], [0, 0, 0, 0, 0]),
        # E: only the last three items count (0, four back, would lift item 1):
        # 0.5*T[4] = {1: .5, 3: .5}, 0.25*T[1] = {2: .75, 3: .25}; 3 and 2 tie at .75.
        ([3, 2, 1, 0, 5], [0.75, 0.75, 0.5, 0, 0]),
    ]
    np.testing.assert_array_equal(items, [e[0] for e in expected])
    np.testing.assert_allclose(scores, [e[1] for e in expected])


def test_item_transition_weights_and_history_exclusion():
    only_last = ItemTransition.fit(SEQUENCES, NUM_ITEMS, weights=(1.0,))
    np.testing.assert_array_equal(only_last.rank(HISTORY[2:3], 3)[0], [[5, 3, 1]])
    model = ItemTransition.fit(SEQUENCES, NUM_ITEMS)
    items, _ = model.rank(HISTORY[:1], 5, exclude_history=True)
    # A without its history items 0 and 1: 2, 3 scored; 5 and 4 fill; the catalog runs out.
    np.testing.assert_array_equal(items, [[2, 3, 5, 4, -1]])


def test_item_transition_ranks_in_chunks_like_at_once(monkeypatch):
    import sgrec_jax.models.counting as counting

    model = ItemTransition.fit(SEQUENCES, NUM_ITEMS)
    whole = model.rank(HISTORY, 4, exclude_history=True)
    monkeypatch.setattr(counting, "_USERS_PER_CHUNK", 2)
    chunked = model.rank(HISTORY, 4, exclude_history=True)
    for a, b in zip(whole, chunked):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "weights, message",
    [((), "non-empty"), ((1.0, -0.5), ">= 0"), ((0.0, 0.0), "not all 0"),
     ((1.0, float("nan")), "finite")],
)
def test_bad_weights_are_named(weights, message):
    with pytest.raises(ValueError, match=message):
        ItemTransition.fit(SEQUENCES, NUM_ITEMS, weights=weights)


def test_bad_ids_and_k_are_named():
    with pytest.raises(ValueError, match="item 6 outside 0..5"):
        training_target_counts([np.array([0, 6])], NUM_ITEMS)
    model = ItemTransition.fit(SEQUENCES, NUM_ITEMS)
    with pytest.raises(ValueError, match="history holds item ids outside"):
        model.rank(np.array([[0, 7]]), 3)
    with pytest.raises(ValueError, match="k must be >= 1"):
        model.rank(HISTORY, 0)


def test_counted_transitions_fit_the_same_models():
    """A run over shards fits from the writer's counted transitions (data/transitions.py)."""
    pairs = [(s[i], s[i + 1]) for s in SEQUENCES for i in range(len(s) - 1)]
    counts = TransitionCounts.from_pairs(*np.array(pairs).T, NUM_ITEMS)
    np.testing.assert_array_equal(Popularity.from_counts(counts).target_count_n,
                                  Popularity.fit(SEQUENCES, NUM_ITEMS).target_count_n)
    for weights in ((1.0, 0.5, 0.25), (0.3, 0.7)):
        ours = ItemTransition.from_counts(counts, weights).rank(HISTORY, 5)
        theirs = ItemTransition.fit(SEQUENCES, NUM_ITEMS, weights).rank(HISTORY, 5)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
