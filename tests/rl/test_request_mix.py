"""Which RL requests train (rl/request_mix.py)."""

import numpy as np
import pytest

from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.rl.request_mix import follows_mask, mix_requests

NUM_ITEMS = 50


def _examples(pairs):
    """Examples with history (PAD, a) and target b for each (a, b)."""
    pairs = np.asarray(pairs, np.int32)
    history = np.stack([np.full(len(pairs), PAD_ITEM, np.int32), pairs[:, 0]], axis=1)
    return Examples(history=history, target=pairs[:, 1], user=np.arange(len(pairs), dtype=np.int32))


@pytest.fixture
def world():
    """Training sequences where 1 -> 2 occurs 3 times, 3 -> 4 twice and 5 -> 6, 7 -> 8 once.
    The RL requests are 20 training transitions: 12 of 1 -> 2 and 3 -> 4 (repeated elsewhere:
    they follow) and 8 of transitions only the request makes (5 -> 6, 7 -> 8: with their own
    occurrence left out they do not follow). Validation: 1 of 4 targets follows."""
    stats = TrainingStatistics.from_sequences(
        [np.array([1, 2, 9]), np.array([1, 2]), np.array([1, 2, 3, 4]), np.array([3, 4]),
         np.array([5, 6]), np.array([7, 8])], NUM_ITEMS)
    requests = _examples([(1, 2)] * 6 + [(3, 4)] * 6 + [(5, 6)] * 4 + [(7, 8)] * 4)
    valid = _examples([(1, 2), (2, 7), (9, 10), (4, 11)])
    return stats, requests, valid


def test_a_transition_only_the_request_makes_does_not_follow(world):
    stats, requests, valid = world
    np.testing.assert_array_equal(follows_mask(requests, stats, own_transition=True),
                                  [True] * 12 + [False] * 8)
    np.testing.assert_array_equal(follows_mask(valid, stats, own_transition=False),
                                  [True, False, False, False])


def test_valid_follows_subsamples_the_following_requests_to_the_validation_share(world):
    stats, requests, valid = world
    mixed = mix_requests("valid_follows", requests, valid, stats)
    # 8 others kept; k / (k + 8) = 1/4 gives k = round(8/3) = 3 following requests.
    assert len(mixed.requests) == 11
    assert mixed.follows_share_before == 0.6 and mixed.follows_share_valid == 0.25
    assert mixed.follows_share_after == pytest.approx(3 / 11)
    kept = set(zip(mixed.requests.history[:, -1].tolist(), mixed.requests.user.tolist()))
    assert {u for a, u in kept if a in (5, 7)} == set(range(12, 20))  # every other one kept
    assert len({u for a, u in kept if a in (1, 3)}) == 3
    again = mix_requests("valid_follows", requests, valid, stats)  # a fixed draw
    np.testing.assert_array_equal(again.requests.user, mixed.requests.user)
    np.testing.assert_array_equal(mixed.requests.target,
                                  requests.target[mixed.requests.user])


def test_all_keeps_every_request_and_reports_its_share(world):
    stats, requests, valid = world
    mixed = mix_requests("all", requests, valid, stats)
    assert mixed.requests is requests
    assert mixed.follows_share_before == mixed.follows_share_after == 0.6
    assert np.isnan(mixed.follows_share_valid)


def test_a_validation_share_above_the_requests_keeps_them_all_and_bad_names_fail(world):
    stats, requests, _ = world
    valid = _examples([(1, 2), (3, 4), (1, 2), (2, 7)])  # 3 of 4 follow: above 0.6
    assert len(mix_requests("valid_follows", requests, valid, stats).requests) == 20
    with pytest.raises(ValueError, match="rl.request_mix 'follows' is not one of all, valid"):
        mix_requests("follows", requests, valid, stats)
