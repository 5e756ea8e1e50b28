"""data.rl_holdout on a hand-built dataset: which training examples SFT keeps and which become
the RL requests, validation and test untouched, and the values it refuses."""

import numpy as np
import pytest
from ml_collections import ConfigDict

from sgrec_jax.data.holdout import (
    check_rl_holdout,
    holdout_mask,
    parse_rl_holdout,
    rl_requests,
    sft_examples,
)
from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from tests.data.test_split import make_dataset

P = PAD_ITEM
# User 0 (3 items) has no training example, user 1 (5 items) two, user 2 (7 items) four.
TINY = make_dataset([[0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14]], num_items=15)


def pairs(examples):
    return [(int(u), int(t)) for u, t in zip(examples.user, examples.target, strict=True)]


def test_last_transition_holds_out_each_users_last_training_example():
    train = leave_one_out(TINY, max_history=3).train
    assert pairs(train) == [(1, 4), (1, 5), (2, 9), (2, 10), (2, 11), (2, 12)]
    held = rl_requests(train, "last_transition")
    # s[:n-3] -> s[n-3]: the target just before the validation one.
    assert pairs(held) == [(1, 5), (2, 12)]
    np.testing.assert_array_equal(held.history, [[P, 3, 4], [9, 10, 11]])
    kept = sft_examples(train, "last_transition")
    assert pairs(kept) == [(1, 4), (2, 9), (2, 10), (2, 11)]
    np.testing.assert_array_equal(kept.history, [[P, P, 3], [P, P, 8], [P, 8, 9], [8, 9, 10]])


def test_last_transition_needs_no_row_order_across_users():
    """Users' rows may interleave; within a user they are in time order."""
    train = leave_one_out(TINY, max_history=3).train
    order = np.array([2, 0, 3, 4, 1, 5])  # (2, 9), (1, 4), (2, 10), (2, 11), (1, 5), (2, 12)
    mask = holdout_mask(type(train)(train.history[order], train.target[order], train.user[order]),
                        "last_transition")
    assert mask.tolist() == [False, False, False, False, True, True]


def test_users_fraction_holds_out_every_example_of_a_fixed_set_of_users():
    sequences = [list(range(u, u + 6)) for u in range(10)]  # 10 users, 3 examples each
    train = leave_one_out(make_dataset(sequences, num_items=20), max_history=3).train
    held = rl_requests(train, "users:0.3")
    kept = sft_examples(train, "users:0.3")
    held_users = set(held.user.tolist())
    assert len(held_users) == 3 and len(held) == 9 and len(kept) == 21
    assert held_users.isdisjoint(kept.user.tolist())
    assert set(rl_requests(train, "users:0.3").user.tolist()) == held_users  # the same draw


def test_none_keeps_everything_for_both_and_validation_and_test_never_change():
    splits = leave_one_out(TINY, max_history=3)
    assert sft_examples(splits.train, "none") is splits.train
    assert rl_requests(splits.train, "none") is splits.train
    again = leave_one_out(TINY, max_history=3)
    for mode in ("last_transition", "users:0.5"):
        sft_examples(splits.train, mode), rl_requests(splits.train, mode)
        assert pairs(splits.valid) == pairs(again.valid) == [(0, 1), (1, 6), (2, 13)]
        assert pairs(splits.test) == pairs(again.test)


def test_a_holdout_that_empties_a_side_fails_naming_the_field():
    only_fours = leave_one_out(make_dataset([[0, 1, 2, 3], [4, 5, 6, 7]], 8), 3).train
    with pytest.raises(ValueError, match="data.rl_holdout 'last_transition' leaves no SFT"):
        sft_examples(only_fours, "last_transition")
    only_threes = leave_one_out(make_dataset([[0, 1, 2]], 3), 3).train
    with pytest.raises(ValueError, match="holds out no training example"):
        rl_requests(only_threes, "last_transition")


@pytest.mark.parametrize("value", ["last", "users", "users:0", "users:1", "users:x", ""])
def test_bad_values_are_refused_naming_the_field(value):
    with pytest.raises(ValueError, match="data.rl_holdout must be"):
        parse_rl_holdout(value)


def test_a_holdout_needs_the_in_memory_source():
    check_rl_holdout(ConfigDict({"rl_holdout": "none", "source": "array_record"}))
    check_rl_holdout(ConfigDict({"rl_holdout": "users:0.1", "source": "memory"}))
    with pytest.raises(ValueError, match="needs data.source 'memory'"):
        check_rl_holdout(ConfigDict({"rl_holdout": "last_transition", "source": "array_record"}))
