"""Counted transitions: the training examples' (last history item -> target) pairs are the
training sequences' transitions, whatever the blocks they are counted in."""

import numpy as np
import pytest

from sgrec_jax.data.split import leave_one_out, training_sequences
from sgrec_jax.data.synthetic import load_synthetic
from sgrec_jax.data.transitions import TransitionCounter, TransitionCounts
from sgrec_jax.models.counting import training_transitions


def test_examples_count_the_training_sequences_transitions_in_any_blocks():
    dataset = load_synthetic(None, num_users=40, num_items=60, branching=(2, 2))
    train = leave_one_out(dataset, max_history=4).train  # H = 4 < most histories: cut left
    counter = TransitionCounter(min_flush=7)  # many merges
    for start in range(0, len(train), 13):
        counter.add_examples(train.history[start:start + 13], train.target[start:start + 13])
    counts = counter.result(dataset.num_items)

    from_t, to_t = training_transitions(training_sequences(dataset), dataset.num_items)
    pairs, expected = np.unique(np.stack([from_t, to_t], 1), axis=0, return_counts=True)
    np.testing.assert_array_equal(np.stack([counts.from_t, counts.to_t], 1), pairs)
    np.testing.assert_array_equal(counts.count_t, expected)
    assert counts.count_t.max() > 1  # repeated pairs were merged across blocks
    np.testing.assert_array_equal(counts.target_counts(),
                                  np.bincount(to_t, minlength=dataset.num_items))


def test_pairs_with_padding_are_skipped_and_ids_outside_the_catalog_refused():
    counts = TransitionCounts.from_pairs(np.array([2, -1, 2, 0]), np.array([1, 1, 1, 2]), 3)
    assert counts.from_t.tolist() == [0, 2] and counts.to_t.tolist() == [2, 1]
    assert counts.count_t.tolist() == [1, 2]
    with pytest.raises(ValueError, match="to_t holds items outside 0..2"):
        TransitionCounts.from_pairs(np.array([0]), np.array([3]), 3)
