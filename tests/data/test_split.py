"""The leave-one-out split: exact examples on a tiny dataset, and the published Beauty counts."""

import numpy as np
import pytest

from sgrec_jax.data.dataset import Items, SeqRecDataset
from sgrec_jax.data.load import load_dataset
from sgrec_jax.data.split import PAD_ITEM, leave_one_out, training_sequences

P = PAD_ITEM


def make_dataset(sequences: list[list[int]], num_items: int) -> SeqRecDataset:
    items = Items(
        ids=tuple(str(i) for i in range(num_items)),
        text={},
        attributes=((),) * num_items,
        bids=np.ones(num_items, np.float32),
        bid_source="constant 1.0 (test)",
    )
    return SeqRecDataset(
        name="tiny",
        items=items,
        user_ids=tuple(f"u{u}" for u in range(len(sequences))),
        sequences=tuple(np.asarray(s, np.int32) for s in sequences),
    )


TINY = make_dataset([[0, 1, 2], [3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14]], num_items=15)


def test_tiny_split_exact_with_history_cap():
    splits = leave_one_out(TINY, max_history=3)

    np.testing.assert_array_equal(
        splits.train.history,
        [
            [P, P, 3],
            [P, 3, 4],
            [P, P, 8],
            [P, 8, 9],
            [8, 9, 10],
            [9, 10, 11],  # [8, 9, 10, 11] capped to the last 3
        ],
    )
    np.testing.assert_array_equal(splits.train.target, [4, 5, 9, 10, 11, 12])
    np.testing.assert_array_equal(splits.train.user, [1, 1, 2, 2, 2, 2])

    np.testing.assert_array_equal(splits.valid.history, [[P, P, 0], [3, 4, 5], [10, 11, 12]])
    np.testing.assert_array_equal(splits.valid.target, [1, 6, 13])
    np.testing.assert_array_equal(splits.valid.user, [0, 1, 2])

    np.testing.assert_array_equal(splits.test.history, [[P, 0, 1], [4, 5, 6], [11, 12, 13]])
    np.testing.assert_array_equal(splits.test.target, [2, 7, 14])
    np.testing.assert_array_equal(splits.test.user, [0, 1, 2])

    for part in (splits.train, splits.valid, splits.test):
        assert part.history.dtype == part.target.dtype == part.user.dtype == np.int32
        np.testing.assert_array_equal(part.history_mask, part.history != PAD_ITEM)
    assert len(splits.train) == sum(len(s) - 3 for s in TINY.sequences) == 6


def test_default_cap_keeps_whole_short_histories():
    splits = leave_one_out(TINY)
    assert splits.test.history.shape == (3, 20)
    np.testing.assert_array_equal(splits.test.history[2], [P] * 14 + [8, 9, 10, 11, 12, 13])


def test_training_sequences_hold_out_valid_and_test_targets():
    held = training_sequences(TINY)
    assert [s.tolist() for s in held] == [[0], [3, 4, 5], [8, 9, 10, 11, 12]]


def test_split_rejects_bad_input():
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        leave_one_out(TINY, max_history=0)
    with pytest.raises(ValueError, match="'u1' has 2 items"):
        leave_one_out(make_dataset([[0, 1, 2], [3, 4]], num_items=5))


@pytest.mark.real_data
def test_beauty_split_counts_and_targets(beauty_dir):
    dataset = load_dataset("p5", beauty_dir)
    sequences = dataset.sequences
    splits = leave_one_out(dataset, max_history=20)

    assert (len(splits.train), len(splits.valid), len(splits.test)) == (131_413, 22_363, 22_363)
    np.testing.assert_array_equal(splits.valid.target, [s[-2] for s in sequences])
    np.testing.assert_array_equal(splits.test.target, [s[-1] for s in sequences])
    np.testing.assert_array_equal(splits.test.history[:, -1], splits.valid.target)
    np.testing.assert_array_equal(splits.valid.user, np.arange(22_363))
    assert splits.train.history.shape == (131_413, 20)
    # The longest user (204 items) fills the whole capped window with its last 20 history items.
    longest = int(np.argmax([len(s) for s in sequences]))
    assert len(sequences[longest]) == 204
    np.testing.assert_array_equal(splits.test.history[longest], sequences[longest][-21:-1])
