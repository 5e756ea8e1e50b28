"""The "npy" source: a precomputed array, and a DataFormatError for every way a file can be bad."""

import numpy as np
import pytest

from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.embeddings import item_embeddings

NUM_ITEMS = 5


def make_dataset() -> SeqRecDataset:
    items = Items(
        ids=tuple(str(i) for i in range(NUM_ITEMS)),
        text={f: ("",) * NUM_ITEMS for f in TEXT_FIELDS},
        attributes=((),) * NUM_ITEMS,
        bids=np.ones(NUM_ITEMS, np.float32),
        bid_source="test",
    )
    return SeqRecDataset(
        name="tiny", items=items, user_ids=("u0",), sequences=(np.arange(3, dtype=np.int32),)
    )


def embeddings_of(path, dim=None, **options):
    return item_embeddings("npy", make_dataset(), dim=dim, seed=0, path=str(path), **options)


def test_valid_file_is_read_as_float32_and_normalised(tmp_path):
    array = np.random.default_rng(0).standard_normal((NUM_ITEMS, 3))
    path = tmp_path / "emb.npy"
    np.save(path, array)
    x = embeddings_of(path, dim=3)
    assert x.dtype == np.float32 and x.shape == (NUM_ITEMS, 3)
    np.testing.assert_allclose(x, array / np.linalg.norm(array, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(embeddings_of(path, normalize=False), array, rtol=1e-6)


def test_zero_rows_are_allowed_only_without_normalisation(tmp_path):
    array = np.ones((NUM_ITEMS, 2), np.float32)
    array[3] = 0.0
    path = tmp_path / "emb.npy"
    np.save(path, array)
    np.testing.assert_array_equal(embeddings_of(path, normalize=False), array)
    with pytest.raises(DataFormatError, match="1 rows are all zeros .*first: row 3"):
        embeddings_of(path)


BAD_FILES = {
    "1-d": (np.ones(NUM_ITEMS), r"expected a 2-D array \[items, dim\], got shape \(5,\)"),
    "ints": (np.ones((NUM_ITEMS, 2), np.int64), "expected a float array, got dtype int64"),
    "rows": (np.ones((4, 2)), "has 4 rows but the dataset has 5 items"),
    "nan": (np.where(np.arange(10).reshape(5, 2) == 7, np.nan, 1.0),
            "1 rows have NaN or infinite values .first: row 3"),
    "inf": (np.full((NUM_ITEMS, 2), np.inf), "5 rows have NaN or infinite values .first: row 0"),
    "objects": (np.array([[object()]] * NUM_ITEMS), "not a readable numeric .npy file"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_arrays_name_the_file_and_the_problem(tmp_path, case):
    array, message = BAD_FILES[case]
    path = tmp_path / f"{case}.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataFormatError, match=message) as error:
        embeddings_of(path)
    assert str(error.value).startswith(f"{path}: ")


def test_dim_must_match_the_file(tmp_path):
    path = tmp_path / "emb.npy"
    np.save(path, np.ones((NUM_ITEMS, 3)))
    with pytest.raises(DataFormatError, match="has 3 columns but dim=4 was asked for"):
        embeddings_of(path, dim=4)


def test_missing_npz_and_non_npy_files(tmp_path):
    with pytest.raises(DataFormatError, match="missing.npy: file not found"):
        embeddings_of(tmp_path / "missing.npy")
    npz = tmp_path / "emb.npz"
    np.savez(npz, x=np.ones((NUM_ITEMS, 2)))
    with pytest.raises(DataFormatError, match="emb.npz: is an .npz archive"):
        embeddings_of(npz)
    text = tmp_path / "emb.txt"
    text.write_text("1 2\n3 4\n")
    with pytest.raises(DataFormatError, match="emb.txt: not a readable numeric .npy file"):
        embeddings_of(text)
