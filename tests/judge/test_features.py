"""Feature evidence: hand-worked values, and the future aspect never sees the target."""

import jax
import numpy as np
import pytest

from sgrec_jax.data.dataset import Items, SeqRecDataset
from sgrec_jax.data.split import PAD_ITEM, Examples, leave_one_out
from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.judge.features import feature_aspects, feature_tables, future_mask
from sgrec_jax.rewards.channel import RewardRequests

P = PAD_ITEM
PROFILE, FUTURE, NOVELTY = (ASPECTS.index(a) for a in ("profile", "future", "novelty"))
# Unit 2-d embeddings, so every cosine below is worked out by hand.
E = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [0.6, 0.8], [0.8, -0.6]], np.float32)


def make_dataset(sequences: list[list[int]], num_items: int) -> SeqRecDataset:
    items = Items(
        ids=tuple(str(i) for i in range(num_items)),
        text={"title": tuple(f"item {i}" for i in range(num_items))},
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


def requests(history: list[list[int]], target: list[int], user: list[int]) -> RewardRequests:
    return RewardRequests.from_examples(
        Examples(np.array(history, np.int32), np.array(target, np.int32), np.array(user, np.int32))
    )


# Training sequences: u0 [0,1,2,3,4]; u1 [0,2,1,2,3] (target 2 bought again); u2 [1,0,2,2].
DATA = make_dataset([[0, 1, 2, 3, 4, 5, 1], [0, 2, 1, 2, 3, 0, 0], [1, 0, 2, 2, 5, 4]], 6)
TABLES = feature_tables(DATA, E)
aspects = jax.jit(feature_aspects)


def test_hand_worked_values():
    # u0 after (0, 1), target 2: future items are 3 and 4.
    ev = np.asarray(aspects(TABLES, requests([[P, 0, 1]], [2], [0]), np.array([[4, 2, P]])))
    mean_norm = np.sqrt(0.5)
    np.testing.assert_allclose(ev[0, 0, PROFILE], (1 + 0.7 / mean_norm) / 2, rtol=1e-6)
    np.testing.assert_allclose(ev[0, 0, FUTURE], 1.0, rtol=1e-6)  # item 4 itself comes later
    np.testing.assert_allclose(ev[0, 0, NOVELTY], 1 - 0.8, rtol=1e-6)
    np.testing.assert_allclose(ev[0, 1, PROFILE], (1 - 0.5 / mean_norm) / 2, rtol=1e-6)
    np.testing.assert_allclose(ev[0, 1, FUTURE], 0.5, atol=1e-6)  # cos(e2,e3)=0, cos(e2,e4)<0
    np.testing.assert_allclose(ev[0, 1, NOVELTY], 1.0, rtol=1e-6)  # all history cosines <= 0
    assert np.isnan(ev[0, 2]).all()  # padding candidate
    assert ev.dtype == np.float32


def test_future_never_uses_the_target_item():
    # u1 after (0), target 2 is bought again at position 3: only items 1 and 3 count, and
    # cos(e2, e1) = cos(e2, e3) = 0. Using the repeat would give the target 1.0.
    ev = np.asarray(aspects(TABLES, requests([[P, P, 0]], [2], [1]), np.array([[2]])))
    np.testing.assert_allclose(ev[0, 0, FUTURE], 0.5, atol=1e-6)
    # u2 after (1, 0), target 2: the only later training item is the target again -> missing.
    ev = np.asarray(aspects(TABLES, requests([[P, 1, 0]], [2], [2]), np.array([[2, 5]])))
    assert np.isnan(ev[0, :, FUTURE]).all()
    assert np.isfinite(ev[0, :, PROFILE]).all() and np.isfinite(ev[0, :, NOVELTY]).all()


def test_validation_and_test_requests_have_no_future():
    splits = leave_one_out(DATA, max_history=3)
    for part in (splits.valid, splits.test):
        items_bg = np.tile(np.arange(6), (len(part), 1))
        ev = np.asarray(aspects(TABLES, RewardRequests.from_examples(part), items_bg))
        assert np.isnan(ev[..., FUTURE]).all()
        assert np.isfinite(ev[..., PROFILE]).all() and np.isfinite(ev[..., NOVELTY]).all()
        assert ((ev[..., [PROFILE, NOVELTY]] >= 0) & (ev[..., [PROFILE, NOVELTY]] <= 1)).all()


def test_future_mask_against_brute_force_with_repeats():
    rng = np.random.default_rng(0)
    data = make_dataset([list(rng.integers(0, 4, size=rng.integers(4, 12))) for _ in range(30)], 4)
    tables = feature_tables(data, rng.standard_normal((4, 3)))
    train = leave_one_out(data, max_history=2).train
    mask_bl = np.asarray(jax.jit(future_mask)(tables, RewardRequests.from_examples(train)))
    seqs = np.asarray(tables.sequences_ul)
    # leave_one_out emits each user's training requests in order t = 1 .. n - 3.
    true_pos = np.concatenate([np.arange(1, len(s) - 2) for s in data.sequences])
    unique = 0
    for b, (u, t, target) in enumerate(zip(train.user, true_pos, train.target, strict=True)):
        seq = seqs[u, : len(data.sequences[u]) - 2]
        got = set(np.flatnonzero(mask_bl[b]))
        truth = {j for j in range(t + 1, len(seq)) if seq[j] != target}
        assert not any(seq[j] == target for j in got)
        assert got <= truth
        hist = [h for h in train.history[b] if h != P]
        windows = [
            s for s in range(len(seq))
            if seq[s] == target and s >= len(hist) and list(seq[s - len(hist): s]) == hist
        ]
        if windows == [t]:
            unique += 1
            assert got == truth
    assert unique > len(train) // 2  # the comparison is not vacuous


def test_bad_embedding_shape():
    with pytest.raises(ValueError, match="expected"):
        feature_tables(DATA, E[:5])
