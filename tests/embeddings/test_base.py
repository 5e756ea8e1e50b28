"""The item_embeddings interface: registry, options, normalisation, and the shared SVD helpers."""

import ml_collections
import numpy as np
import pytest
import scipy.sparse

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.embeddings import EMBEDDING_SOURCES, item_embeddings
from sgrec_jax.embeddings.base import fill_empty_rows, l2_normalize_rows, truncated_svd


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


# Two groups of items that co-occur among themselves; enough for a 3-dim collaborative SVD.
DATASET = make_dataset(
    [[0, 1, 2, 3, 0, 1], [2, 3, 0, 1, 4, 5], [4, 5, 6, 7, 0, 1], [6, 7, 4, 5, 2, 3]] * 2, 8
)


def test_all_sources_are_registered():
    assert EMBEDDING_SOURCES.names() == ["collaborative", "npy", "sentence_encoder", "text"]


def test_unknown_source_lists_valid_names():
    with pytest.raises(UnknownNameError, match="valid names: collaborative, npy"):
        item_embeddings("word2vec", DATASET, dim=3, seed=0)


def test_unknown_option_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) windw .*valid options: "
                       r"context_smoothing, normalize, singular_value_power, window"):
        item_embeddings("collaborative", DATASET, dim=3, seed=0, windw=2)


def test_missing_required_option_is_named():
    assert EMBEDDING_SOURCES.options("npy") == {"normalize": True, "path": None}
    with pytest.raises(ValueError, match="'npy' needs option\\(s\\) path"):
        item_embeddings("npy", DATASET, dim=None, seed=0, **EMBEDDING_SOURCES.options("npy"))


def test_options_pass_through_a_config_dict():
    options = ml_collections.ConfigDict(EMBEDDING_SOURCES.options("collaborative"))
    options.window = 2
    from_config = item_embeddings("collaborative", DATASET, dim=3, seed=0, **options)
    direct = item_embeddings("collaborative", DATASET, dim=3, seed=0, window=2)
    np.testing.assert_array_equal(from_config, direct)


def test_bad_option_value_and_dim_are_rejected():
    with pytest.raises(ValueError, match="window must be >= 1"):
        item_embeddings("collaborative", DATASET, dim=3, seed=0, window=0)
    with pytest.raises(ValueError, match="needs dim"):
        item_embeddings("collaborative", DATASET, dim=None, seed=0)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        item_embeddings("collaborative", DATASET, dim=0, seed=0)


def test_rows_are_unit_norm_unless_normalize_is_false():
    x = item_embeddings("collaborative", DATASET, dim=3, seed=0)
    assert x.dtype == np.float32 and x.shape == (8, 3)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    raw = item_embeddings("collaborative", DATASET, dim=3, seed=0, normalize=False)
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    np.testing.assert_allclose(l2_normalize_rows(raw), x, rtol=1e-6)


def test_l2_normalize_rejects_zero_rows():
    with pytest.raises(ValueError, match="first: 1"):
        l2_normalize_rows(np.array([[1.0, 0.0], [0.0, 0.0]]))


def test_truncated_svd_matches_dense_svd_and_is_seeded():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((30, 20)) * (rng.random((30, 20)) < 0.3)
    x = scipy.sparse.csr_array(dense)
    u, s = truncated_svd(x, 5, seed=0)
    u_ref, s_ref, _ = np.linalg.svd(dense)
    np.testing.assert_allclose(s, s_ref[:5], rtol=1e-8)
    # Same subspace, and each vector equals the reference one up to sign.
    np.testing.assert_allclose(np.abs(np.sum(u * u_ref[:, :5], axis=0)), 1.0, rtol=1e-6)
    peaks = u[np.abs(u).argmax(axis=0), np.arange(5)]
    assert (peaks > 0).all()
    u_again, _ = truncated_svd(x, 5, seed=0)
    np.testing.assert_array_equal(u, u_again)
    with pytest.raises(ValueError, match="dim=20 must be < min"):
        truncated_svd(x, 20, seed=0)


def test_fill_empty_rows_is_small_deterministic_and_local():
    x = np.ones((6, 4))
    empty = np.array([False, True, False, False, True, False])
    filled = fill_empty_rows(x, empty, seed=3)
    np.testing.assert_array_equal(filled[~empty], x[~empty])
    norms = np.linalg.norm(filled[empty], axis=1)
    assert (norms > 0).all() and (norms < 0.02 * 2.0).all()  # other rows have norm 2
    assert not np.allclose(filled[1], filled[4])
    np.testing.assert_array_equal(fill_empty_rows(x, empty, seed=3), filled)
    # Row 1's fallback does not depend on which other rows are empty.
    only_one = fill_empty_rows(x, np.arange(6) == 1, seed=3)
    np.testing.assert_array_equal(only_one[1], filled[1])
    assert not np.array_equal(fill_empty_rows(x, empty, seed=4), filled)
