"""crop_histories keeps a random non-empty suffix of the real items, only for the chosen share."""

import jax
import numpy as np
import pytest

from sgrec_jax.train.augment import crop_histories


def right_aligned(lengths, h=6):
    return np.arange(h)[None, :] >= h - np.asarray(lengths)[:, None]


def test_always_cropping_keeps_a_nonempty_suffix_of_the_real_items():
    mask = right_aligned(np.resize([1, 3, 6, 4], 400))
    out = np.asarray(crop_histories(mask, jax.random.key(0), 1.0))
    kept = out.sum(1)
    assert (kept >= 1).all() and (kept <= mask.sum(1)).all()
    assert not (out & ~mask).any()  # never a padded slot
    np.testing.assert_array_equal(out, right_aligned(kept))  # a suffix: the last k columns
    # every suffix length is drawn for the 6-item histories
    assert set(kept[mask.sum(1) == 6]) == set(range(1, 7))


def test_probability_sets_the_share_cropped_and_zero_is_identity():
    mask = right_aligned(np.full(2000, 6))
    out = np.asarray(crop_histories(mask, jax.random.key(1), 0.3))
    changed = (out != mask).any(1).mean()
    assert 0.2 < changed < 0.3  # 0.3 x (5/6 of the crops shorten a 6-item history)
    np.testing.assert_array_equal(crop_histories(mask, jax.random.key(1), 0.0), mask)
    with pytest.raises(ValueError, match="crop probability"):
        crop_histories(mask, jax.random.key(1), 1.5)


def test_max_keep_caps_the_suffix_length():
    mask = right_aligned(np.resize([1, 3, 6, 4], 400))
    out = np.asarray(crop_histories(mask, jax.random.key(2), 1.0, max_keep=2))
    kept = out.sum(1)
    np.testing.assert_array_equal(out, right_aligned(kept))
    assert set(kept[mask.sum(1) == 6]) == {1, 2} and set(kept[mask.sum(1) == 1]) == {1}
    last = np.asarray(crop_histories(mask, jax.random.key(3), 1.0, max_keep=1))
    np.testing.assert_array_equal(last, right_aligned(np.ones(400, int)))  # the last item alone
    with pytest.raises(ValueError, match="max_keep must be >= 0"):
        crop_histories(mask, jax.random.key(1), 0.5, max_keep=-1)
