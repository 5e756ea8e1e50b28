"""The synthetic world: determinism, ranges, the logs, the conflict knob, text signal, drift."""

import dataclasses

import numpy as np
import pytest
from scipy.stats import spearmanr

from sgrec_jax.data.dataset import TEXT_FIELDS, validate_sequences
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.data.synthetic import (
    BID_SOURCE,
    SyntheticWorld,
    WorldConfig,
    generate_world,
    load_synthetic,
)

SMALL = WorldConfig(num_items=400, num_users=150, seed=3)


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return generate_world(SMALL)


def _array_fields(w: SyntheticWorld) -> dict[str, np.ndarray]:
    return {
        f.name: getattr(w, f.name)
        for f in dataclasses.fields(w)
        if isinstance(getattr(w, f.name), np.ndarray)
    }


def _all_pairs(w: SyntheticWorld) -> tuple[np.ndarray, np.ndarray]:
    """Every user's first interest [U, D] against the whole catalog [U, N]."""
    users = np.arange(w.dataset.num_users)
    items = np.tile(np.arange(w.dataset.num_items), (len(users), 1))
    return w.interests_at(users, np.zeros_like(users)), items


def test_same_seed_same_world(world):
    again = generate_world(SMALL)
    for name, value in _array_fields(world).items():
        np.testing.assert_array_equal(value, getattr(again, name), err_msg=name)
    for a, b in zip(world.dataset.sequences, again.dataset.sequences, strict=True):
        np.testing.assert_array_equal(a, b)
    assert world.dataset.items.text == again.dataset.items.text
    assert world.dataset.items.attributes == again.dataset.items.attributes


def test_different_seed_different_world(world):
    other = generate_world(dataclasses.replace(SMALL, seed=4))
    assert other.dataset.items.text["title"] != world.dataset.items.text["title"]
    assert not np.array_equal(other.bids, world.bids)
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(world.dataset.sequences, other.dataset.sequences, strict=True)
    )


def test_dataset_fields(world):
    ds = world.dataset
    assert ds.name == "synthetic"
    assert ds.items.bid_source == BID_SOURCE
    assert ds.num_items == SMALL.num_items and ds.num_users == SMALL.num_users
    assert set(ds.items.text) == set(TEXT_FIELDS)
    for field in ("title", "categories", "brand"):
        assert all(ds.items.text[field]), field
    np.testing.assert_array_equal(ds.items.bids, world.bids)
    depth = len(SMALL.branching)
    assert all(len(a) == 1 + depth for a in ds.items.attributes)
    # Attribute ids are one space: brand, then one node per level, never shared across kinds.
    attrs = np.array(ds.items.attributes)
    for k in range(depth):
        assert attrs[:, k].max() < attrs[:, k + 1].min()
    np.testing.assert_array_equal(world.item_path[:, -1], world.item_topic)
    assert np.all(world.item_brand // SMALL.brands_per_topic == world.item_topic)


def test_ranges(world):
    users_bd, items_bg = _all_pairs(world)
    ctr = world.true_ctr(users_bd, items_bg)
    rel = world.semantic_relevance(users_bd, items_bg)
    value = world.business_value(users_bd, items_bg)
    assert ctr.shape == rel.shape == value.shape == items_bg.shape
    assert np.all((ctr > 0) & (ctr < 1))
    assert np.all((rel >= 0) & (rel <= 1))
    assert np.all(world.bids > 0)
    np.testing.assert_allclose(value, world.bids[items_bg] * ctr, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(world.item_vectors, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="expected users"):
        world.true_ctr(users_bd, items_bg[:-1])


def test_sequences(world):
    seqs = world.dataset.sequences
    validate_sequences(seqs, world.dataset.num_items, path=None, min_length=SMALL.min_seq_len)
    lengths = np.array([len(s) for s in seqs])
    assert lengths.min() >= SMALL.min_seq_len and lengths.max() <= SMALL.max_seq_len
    assert all(len(np.unique(s)) == len(s) for s in seqs)
    assert all(s.dtype == np.int32 for s in seqs)
    # Mean of min + Geometric is `mean_seq_len` before the cap; 150 users give a loose check.
    assert abs(lengths.mean() - SMALL.mean_seq_len) < 2.0


def test_choices_follow_interest(world):
    users = np.repeat(np.arange(world.dataset.num_users), [len(s) for s in world.dataset.sequences])
    chosen = np.concatenate(world.dataset.sequences)
    x_bd = world.interests_for_targets(users, chosen)
    rel_chosen = world.semantic_relevance(x_bd, chosen[:, None]).mean()
    rng = np.random.default_rng(0)
    rel_random = world.semantic_relevance(
        x_bd, rng.integers(0, world.dataset.num_items, (len(users), 1))
    ).mean()
    assert rel_chosen > rel_random + 0.1


def test_leave_one_out_and_target_interests(world):
    splits = leave_one_out(world.dataset)
    lengths = np.array([len(s) for s in world.dataset.sequences])
    assert len(splits.test) == len(splits.valid) == SMALL.num_users
    assert len(splits.train) == int((lengths - 3).sum())
    got = world.interests_for_targets(splits.test.user, splits.test.target)
    want = world.interests_at(splits.test.user, lengths[splits.test.user] - 1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(world.user_interest_at(5, 2), world.interests_at([5], [2])[0])
    with pytest.raises(IndexError):
        world.user_interest_at(0, int(lengths[0]))
    missing = np.setdiff1d(np.arange(SMALL.num_items), world.dataset.sequences[0])[0]
    with pytest.raises(KeyError):
        world.interests_for_targets(np.array([0]), np.array([missing]))


def test_conflict_lowers_rank_correlation(world):
    correlations = []
    for conflict in (0.0, 0.5, 1.0):
        w = generate_world(dataclasses.replace(SMALL, conflict=conflict))
        users_bd, items_bg = _all_pairs(w)
        value = w.business_value(users_bd, items_bg).ravel()
        rel = w.semantic_relevance(users_bd, items_bg).ravel()
        correlations.append(spearmanr(value, rel)[0])
        # Only the business side depends on the knob.
        assert w.dataset.items.text == world.dataset.items.text
        np.testing.assert_array_equal(w.dataset.sequences[7], world.dataset.sequences[7])
    assert correlations[0] > 0.3
    assert correlations[0] > correlations[1] > correlations[2]
    assert correlations[2] < -0.2


def _bag_of_words(texts: tuple[str, ...]) -> np.ndarray:
    vocab = {tok: j for j, tok in enumerate(sorted({t for s in texts for t in s.split()}))}
    x = np.zeros((len(texts), len(vocab)))
    for i, s in enumerate(texts):
        for tok in s.split():
            x[i, vocab[tok]] += 1
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_text_carries_topics(world):
    top = world.item_path[:, 0]
    paths = [set(p.split(",")) for p in world.dataset.items.text["categories"]]
    i, j = np.triu_indices(len(paths), k=1)
    shared = np.array([bool(paths[a] & paths[b]) for a, b in zip(i, j, strict=True)])
    same_top = top[i] == top[j]
    assert shared[same_top].mean() == 1.0 and shared[~same_top].mean() == 0.0
    # Titles alone: a bag-of-words nearest neighbour recovers the leaf topic (chance 1/48).
    x = _bag_of_words(world.dataset.items.text["title"])
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    nearest = sim.argmax(axis=1)
    assert (world.item_topic[nearest] == world.item_topic).mean() > 0.6
    assert (top[nearest] == top).mean() > 0.85


def _step_autocorrelation(w: SyntheticWorld) -> np.ndarray:
    """Cosine between consecutive interests of every user."""
    cos = []
    for u, seq in enumerate(w.dataset.sequences):
        x = w.interests_at(np.full(len(seq), u), np.arange(len(seq)))
        cos.append(np.sum(x[1:] * x[:-1], axis=1))
    return np.concatenate(cos)


def test_drift():
    still = _step_autocorrelation(generate_world(dataclasses.replace(SMALL, drift=0.0)))
    np.testing.assert_allclose(still, 1.0, atol=1e-6)
    slow = _step_autocorrelation(generate_world(dataclasses.replace(SMALL, drift=0.1)))
    fast = _step_autocorrelation(generate_world(dataclasses.replace(SMALL, drift=0.5)))
    assert 1.0 > slow.mean() > fast.mean()
    assert slow.min() < 0.99


def test_user_blocks_keep_the_items_and_redraw_the_users(world):
    blocked = dataclasses.replace(SMALL, user_block_size=40)  # blocks of 40, 40, 40, 30
    a, b = generate_world(blocked), generate_world(blocked)
    for x, y in zip(a.dataset.sequences, b.dataset.sequences, strict=True):
        np.testing.assert_array_equal(x, y)  # seeded: same blocks, same users
    np.testing.assert_array_equal(a.interests, b.interests)
    for name in ("item_vectors", "bids", "item_quality", "click_matrix"):
        np.testing.assert_array_equal(getattr(a, name), getattr(world, name), err_msg=name)
    assert a.dataset.num_users == 150 and a.user_topic_prefs.shape == world.user_topic_prefs.shape
    assert a.interests.shape == (a.dataset.num_interactions, SMALL.latent_dim)
    validate_sequences(a.dataset.sequences, a.dataset.num_items, path=None, min_length=5)
    assert not np.array_equal(a.dataset.sequences[0], world.dataset.sequences[0])
    # Each block draws its own users: block 2's first user is not block 1's.
    assert not np.array_equal(a.dataset.sequences[40][:5], a.dataset.sequences[0][:5])


def test_load_synthetic():
    ds = load_synthetic("/nonexistent", name="syn", bid_seed=3, min_seq_len=7,
                        num_items=400, num_users=150)
    assert ds.name == "syn"
    assert min(len(s) for s in ds.sequences) >= 7
    same_seed = generate_world(dataclasses.replace(SMALL, min_seq_len=7)).dataset
    np.testing.assert_array_equal(ds.items.bids, same_seed.items.bids)
    assert ds.items.text == same_seed.items.text
    other = load_synthetic(None, bid_seed=4, num_items=400, num_users=150)
    assert other.name == "synthetic"
    assert not np.array_equal(other.items.bids, ds.items.bids)


@pytest.mark.parametrize(
    "change",
    [{"conflict": 1.5}, {"drift": -0.1}, {"min_seq_len": 4}, {"num_items": 10},
     {"mean_seq_len": 3.0}, {"latent_dim": 2}, {"user_block_size": -1}],
)
def test_bad_config(change):
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **change)
