"""The "collaborative" source: windowed co-occurrence, PPMI, SVD, and no held-out leakage."""

import numpy as np
import pytest

from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.embeddings import item_embeddings
from sgrec_jax.embeddings.collaborative import cooccurrence, ppmi


def make_dataset(sequences: list[list[int]], num_items: int) -> SeqRecDataset:
    items = Items(
        ids=tuple(str(i) for i in range(num_items)),
        text={f: ("",) * num_items for f in TEXT_FIELDS},
        attributes=((),) * num_items,
        bids=np.ones(num_items, np.float32),
        bid_source="test",
    )
    return SeqRecDataset(
        name="tiny",
        items=items,
        user_ids=tuple(str(u) for u in range(len(sequences))),
        sequences=tuple(np.asarray(s, np.int32) for s in sequences),
    )


def cluster_histories(num_users: int = 120, length: int = 6) -> list[list[int]]:
    """Users who each browse one cluster: items 0-9 or items 10-19."""
    rng = np.random.default_rng(0)
    histories = []
    for u in range(num_users):
        cluster = 10 * (u % 2)
        histories.append(list(cluster + rng.choice(10, size=length, replace=False)))
    return histories


def test_cooccurrence_counts_pairs_within_the_window_and_per_user():
    counts = cooccurrence([np.array([0, 1, 2, 1]), np.array([3, 0])], 4, window=1).toarray()
    expected = np.zeros((4, 4))
    for a, b in [(0, 1), (1, 2), (2, 1), (3, 0)]:
        expected[a, b] += 1
        expected[b, a] += 1
    np.testing.assert_array_equal(counts, expected)
    wide = cooccurrence([np.array([0, 1, 2, 1]), np.array([3, 0])], 4, window=2).toarray()
    assert wide[0, 2] == 1 and wide[1, 1] == 0  # item 1 next to itself is not a pair
    assert wide[2, 3] == 0  # users' sequences are not joined


def test_ppmi_matches_the_dense_formula():
    counts = cooccurrence([np.array([0, 1, 2, 0, 1, 3]), np.array([2, 3, 1])], 4, window=2)
    dense = counts.toarray()
    context = dense.sum(axis=0) ** 0.75
    with np.errstate(divide="ignore"):
        pmi = np.log(dense / dense.sum(axis=1, keepdims=True) / (context / context.sum()))
    np.testing.assert_allclose(ppmi(counts, 0.75).toarray(), np.maximum(pmi, 0.0), rtol=1e-12)


def test_frequently_cooccurring_items_are_closer():
    # Items 0-9 and 10-19 are two clusters; 0 and 10 meet in one history only.
    histories = cluster_histories() + [[0, 10, 5, 15]]
    dataset = make_dataset([h + [20, 21] for h in histories], 22)
    x = item_embeddings("collaborative", dataset, dim=6, seed=0)
    cluster = np.arange(20) // 10
    cos = x[:20] @ x[:20].T
    same = (cluster[:, None] == cluster[None, :]) & ~np.eye(20, dtype=bool)
    assert cos[same].mean() > cos[cluster[:, None] != cluster[None, :]].mean() + 0.5
    assert cos[0, 1:10].min() > cos[0, 10]


def test_held_out_items_have_no_effect():
    histories = cluster_histories()
    # Items 20 and 21 co-occur in every sequence, but only as validation and test targets.
    held_out_pair = make_dataset([h + [20, 21] for h in histories], 22)
    # Same training parts; the held-out positions hold ordinary items instead.
    other_targets = make_dataset([h + [h[0], h[1]] for h in histories], 22)
    x = item_embeddings("collaborative", held_out_pair, dim=6, seed=0)
    np.testing.assert_array_equal(
        x, item_embeddings("collaborative", other_targets, dim=6, seed=0)
    )
    # The same pair inside the training part would pull 20 and 21 together.
    in_training = make_dataset([[20, 21] + h for h in histories], 22)
    leaked = item_embeddings("collaborative", in_training, dim=6, seed=0)
    assert leaked[20] @ leaked[21] > 0.9
    assert x[20] @ x[21] < leaked[20] @ leaked[21] - 0.3


def test_items_without_cooccurrence_get_distinct_seeded_rows():
    dataset = make_dataset([h + [20, 21] for h in cluster_histories()], 23)  # 22 never occurs
    x = item_embeddings("collaborative", dataset, dim=6, seed=0)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert np.abs(x[20] @ x[22]) < 0.99 and np.abs(x[21] @ x[22]) < 0.99
    np.testing.assert_array_equal(item_embeddings("collaborative", dataset, dim=6, seed=0), x)
    assert not np.array_equal(item_embeddings("collaborative", dataset, dim=6, seed=1)[22], x[22])


def test_no_cooccurrence_at_all_is_a_clear_error():
    dataset = make_dataset([[0, 1, 2], [1, 2, 0]], 3)  # each training part is one item
    with pytest.raises(ValueError, match="no two distinct items co-occur"):
        item_embeddings("collaborative", dataset, dim=1, seed=0)
