"""hit and rank against hand-computed groups (algorithms.md section 2)."""

import math

import jax.numpy as jnp
import numpy as np

from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardRequests
from sgrec_jax.rewards.ranking import positions_bg


def _requests(targets):
    b = len(targets)
    return RewardRequests(
        history_bh=jnp.zeros((b, 3), jnp.int32), history_mask_bh=jnp.ones((b, 3), bool),
        target_b=jnp.asarray(targets, jnp.int32), user_b=jnp.zeros(b, jnp.int32),
        judged_b=jnp.ones(b, bool),
    )


def _channel(name):
    return REWARD_CHANNELS.get(name)(None, {})


def test_hit_marks_the_target_and_nan_for_padding():
    items = jnp.array([[7, 3, 5, -1], [1, 2, 3, 4]], jnp.int32)
    out = np.asarray(_channel("hit")(_requests([5, 9]), items, jnp.zeros((2, 4))))
    np.testing.assert_array_equal(out, [[0, 0, 1, np.nan], [0, 0, 0, 0]])


def test_positions_sort_by_logprob_descending_ties_in_group_order():
    np.testing.assert_array_equal(positions_bg(jnp.array([[-2.0, -1.0, -2.0, -0.5]])),
                                  [[2, 1, 3, 0]])


def test_rank_by_hand():
    # Group of G = 3 ordered by logprob: item 4 (pos 0), 8 (pos 1), 6 (pos 2).
    norm = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    items = jnp.array([[8, 6, 4], [8, 6, 4], [8, 6, 4]], jnp.int32)
    logprob = jnp.array([[-1.0, -2.0, -0.5]] * 3)
    out = np.asarray(_channel("rank")(_requests([6, 4, 99]), items, logprob))
    want = [
        # Target 6 at position 2: wrong items at positions 1 (item 8) and 0 (item 4).
        [-(1 / math.log2(3)) / norm, 1.0, -1.0 / norm],
        # Target 4 at position 0.
        [-(1 / math.log2(3)) / norm, -(1 / math.log2(4)) / norm, 1.0],
        # Target absent: no penalty at all.
        [0.0, 0.0, 0.0],
    ]
    np.testing.assert_allclose(out, want, rtol=1e-6)


def test_rank_padding_is_nan_and_counts_as_a_position():
    norm = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    items = jnp.array([[5, -1, 2]], jnp.int32)
    out = np.asarray(_channel("rank")(_requests([5]), items, jnp.array([[0.0, -1.0, -2.0]])))
    np.testing.assert_allclose(out, [[1.0, np.nan, -(1 / math.log2(4)) / norm]], rtol=1e-6)
