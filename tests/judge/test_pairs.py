"""Preference pairs: negatives never from the user's sequence, user split, evidence, label files."""

import functools

import numpy as np
import pytest

from sgrec_jax.data.dataset import Items, SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.judge.features import feature_aspects, feature_tables
from sgrec_jax.judge.pairs import (
    Pairs,
    held_out_users,
    labelled_pairs,
    load_pairwise_labels,
    log_pairs,
    nearest_neighbours,
    pair_evidence,
    split_by_user,
    store_evidence,
    store_pairs,
    store_requests,
)
from sgrec_jax.judge.store import EvidenceStore

NUM_ITEMS = 40


def make_dataset(num_users: int = 12, seed: int = 0) -> SeqRecDataset:
    rng = np.random.default_rng(seed)
    items = Items(
        ids=tuple(str(i) for i in range(NUM_ITEMS)),
        text={"title": tuple(f"item {i}" for i in range(NUM_ITEMS))},
        attributes=((),) * NUM_ITEMS,
        bids=np.ones(NUM_ITEMS, np.float32),
        bid_source="constant 1.0 (test)",
    )
    sequences = tuple(rng.choice(NUM_ITEMS, size=rng.integers(5, 9), replace=False).astype(np.int32)
                      for _ in range(num_users))
    return SeqRecDataset("tiny", items, tuple(f"u{u}" for u in range(num_users)), sequences)


DATA = make_dataset()
EMB = np.random.default_rng(1).standard_normal((NUM_ITEMS, 6)).astype(np.float32)
EMB /= np.linalg.norm(EMB, axis=1, keepdims=True)
TRAIN = leave_one_out(DATA, max_history=4).train


@pytest.mark.parametrize("negative", ["random", "nearest", "popular"])
def test_negatives_are_outside_the_users_sequence_and_seeded(negative):
    pairs = log_pairs(DATA, TRAIN, negative=negative, seed=0, emb_nd=EMB)
    assert len(pairs) == len(TRAIN)
    np.testing.assert_array_equal(pairs.item_i, TRAIN.target)
    np.testing.assert_array_equal(pairs.target, TRAIN.target)
    for user, j in zip(pairs.user, pairs.item_j, strict=True):
        assert j not in DATA.sequences[user]
    again = log_pairs(DATA, TRAIN, negative=negative, seed=0, emb_nd=EMB)
    np.testing.assert_array_equal(again.item_j, pairs.item_j)
    other = log_pairs(DATA, TRAIN, negative=negative, seed=1, emb_nd=EMB)
    assert not np.array_equal(other.item_j, pairs.item_j)


def test_nearest_negatives_come_from_the_targets_neighbours():
    k = 5
    pairs = log_pairs(DATA, TRAIN, negative="nearest", seed=0, emb_nd=EMB, num_neighbours=k)
    neighbours = nearest_neighbours(EMB, pairs.target, k)
    in_top_k = (neighbours == pairs.item_j[:, None]).any(axis=1)
    # Rows whose k neighbours are all in the user's sequence fall back to random negatives.
    fallback = np.array([np.isin(nb, DATA.sequences[u]).all()
                         for nb, u in zip(neighbours, pairs.user, strict=True)])
    assert (in_top_k | fallback).all() and in_top_k.mean() > 0.9


def test_nearest_neighbours_match_brute_force():
    items = np.array([0, 7, 39])
    got = nearest_neighbours(EMB, items, 4, chunk=2)
    sim = EMB[items] @ EMB.T
    sim[np.arange(3), items] = -np.inf
    np.testing.assert_array_equal(got, np.argsort(-sim, axis=1)[:, :4])
    with pytest.raises(ValueError, match="num_neighbours"):
        nearest_neighbours(EMB, items, NUM_ITEMS)


def test_nearest_needs_embeddings_and_unknown_negative_fails():
    with pytest.raises(ValueError, match="emb_nd"):
        log_pairs(DATA, TRAIN, negative="nearest", seed=0)
    with pytest.raises(ValueError, match="valid: random, nearest, popular"):
        log_pairs(DATA, TRAIN, negative="hardest", seed=0)


def test_split_by_user_is_disjoint_and_complete():
    pairs = log_pairs(DATA, TRAIN, negative="random", seed=0)
    held = held_out_users(DATA.num_users, 0.25, seed=0)
    assert held.sum() == 3
    train, test = split_by_user(pairs, held)
    assert set(train.user) & set(test.user) == set()
    assert len(train) + len(test) == len(pairs) and held[test.user].all()
    np.testing.assert_array_equal(held, held_out_users(DATA.num_users, 0.25, seed=0))


def test_pair_evidence_matches_the_backend_across_padded_batches():
    pairs = log_pairs(DATA, TRAIN, negative="random", seed=0)
    tables = feature_tables(DATA, EMB)
    ev_i, ev_j = pair_evidence(pairs, functools.partial(feature_aspects, tables), batch_size=7)
    direct = np.asarray(feature_aspects(tables, pairs.requests(),
                                        np.stack([pairs.item_i, pairs.item_j], axis=1)))
    np.testing.assert_allclose(ev_i, direct[:, 0], rtol=1e-6)
    np.testing.assert_allclose(ev_j, direct[:, 1], rtol=1e-6)
    assert ev_i.shape == (len(pairs), 3) and np.isnan(ev_i[:, 1]).any()  # some lack "future"


def test_store_evidence_is_nan_where_the_store_lacks_the_pair():
    pairs = log_pairs(DATA, TRAIN, negative="random", seed=0).take(np.arange(3))
    known = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], np.float32)
    store = EvidenceStore(pairs.user[:2], pairs.item_i[:2], known)
    ev_i, ev_j = store_evidence(pairs, store)
    np.testing.assert_allclose(ev_i[:2], known)
    assert np.isnan(ev_i[2]).all() and np.isnan(ev_j).all()


def test_store_pairs_recover_the_judged_requests():
    # A user with two sampled requests (targets seq[2], seq[3]) and two negatives; a stored item
    # of the sequence that no training request targets; a user with negatives only.
    user = next(u for u, seq in enumerate(DATA.sequences) if len(seq) >= 6)
    other = (user + 1) % DATA.num_users
    seq = DATA.sequences[user]
    rows = {int(TRAIN.target[r]): int(r) for r in np.flatnonzero(TRAIN.user == user)}
    outside = np.setdiff1d(np.arange(NUM_ITEMS), np.concatenate([seq, DATA.sequences[other]]))
    pairs_in = [(user, seq[3]), (user, outside[0]), (user, seq[2]), (user, outside[1]),
                (user, seq[0]), (other, outside[2])]
    users, items = np.array(pairs_in, np.int32).T
    evidence = np.random.default_rng(0).uniform(size=(len(users), 3)).astype(np.float32)
    store = EvidenceStore(users, items, evidence)

    want = {(user, seq[3]): rows[seq[3]], (user, seq[2]): rows[seq[2]],
            (user, outside[0]): rows[seq[2]], (user, outside[1]): rows[seq[2]],
            (user, seq[0]): -1, (other, outside[2]): -1}
    got = store_requests(store, DATA, TRAIN)
    assert dict(zip(zip(store.users_n.tolist(), store.items_n.tolist()), got.tolist())) == {
        (int(u), int(i)): r for (u, i), r in want.items()}

    pairs, ev_i, ev_j = store_pairs(store, DATA, TRAIN)
    found = sorted(zip(pairs.item_i.tolist(), pairs.item_j.tolist()))
    assert found == sorted((int(t), int(o)) for t in seq[2:4] for o in outside[:2])
    assert (pairs.user == user).all()
    for r in range(len(pairs)):
        request = rows[int(pairs.item_i[r])]
        np.testing.assert_array_equal(pairs.history[r], TRAIN.history[request])
        assert pairs.target[r] == pairs.item_i[r]
        np.testing.assert_array_equal(ev_i[r], store.lookup([user], [pairs.item_i[r]])[0][0])
        np.testing.assert_array_equal(ev_j[r], store.lookup([user], [pairs.item_j[r]])[0][0])


def write_labels(path, **overrides):
    arrays = {"user": np.array([0, 1, 2]), "item_i": np.array([3, 4, 5]),
              "item_j": np.array([6, 7, 8]), "label": np.array([1, 0, 1])}
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


def test_pairwise_labels_load_and_orient(tmp_path):
    labels = load_pairwise_labels(write_labels(tmp_path / "l.npz"), DATA.num_users, NUM_ITEMS)
    pairs = labelled_pairs(labels, DATA, max_history=4)
    np.testing.assert_array_equal(pairs.item_i, [3, 7, 5])  # label 0: item_j preferred
    np.testing.assert_array_equal(pairs.item_j, [6, 4, 8])
    for r, user in enumerate(labels["user"]):
        seq = DATA.sequences[user]
        assert pairs.target[r] == seq[-2]
        np.testing.assert_array_equal(pairs.history[r][pairs.history[r] >= 0], seq[:-2][-4:])
    assert isinstance(Pairs.concat([pairs, pairs]), Pairs)


@pytest.mark.parametrize("overrides, message", [
    ({"label": None}, "missing field"),
    ({"item_j": np.array([6, 7, 40])}, "'item_j' row 2: 40 is outside"),
    ({"user": np.array([0, -1, 2])}, "'user' row 1"),
    ({"label": np.array([1, 2, 0])}, "'label' row 1: 2 is not 0 or 1"),
    ({"item_j": np.array([6, 4, 8])}, "row 1: item_i == item_j"),
    ({"label": np.array([1.0, 0.0, 1.0])}, "must be integer"),
    ({"user": np.array([0, 1])}, "'item_i' has 3 rows, 'user' has 2"),
])
def test_bad_label_files_name_file_and_field(tmp_path, overrides, message):
    path = write_labels(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataFormatError, match=message) as info:
        load_pairwise_labels(path, DATA.num_users, NUM_ITEMS)
    assert str(path) in str(info.value)
