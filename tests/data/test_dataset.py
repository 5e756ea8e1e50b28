"""The dataset types: their own consistency checks, stats, documents, and sequence validation."""

import hashlib

import numpy as np
import pytest

from sgrec_jax.data.dataset import Items, SeqRecDataset, file_sha256, validate_sequences
from sgrec_jax.data.errors import DataFormatError


def make_items(n: int = 3, **overrides) -> Items:
    fields = dict(
        ids=tuple(f"A{i}" for i in range(n)),
        text={
            "title": tuple(f"title {i}" for i in range(n)),
            "brand": ("acme",) + ("",) * (n - 1),
        },
        attributes=tuple((i,) for i in range(n)),
        bids=np.ones(n, np.float32),
        bid_source="constant 1.0 (test)",
    )
    return Items(**(fields | overrides))


def make_dataset(sequences: list[list[int]], num_items: int = 3) -> SeqRecDataset:
    return SeqRecDataset(
        name="tiny",
        items=make_items(num_items),
        user_ids=tuple(f"u{u}" for u in range(len(sequences))),
        sequences=tuple(np.asarray(s, np.int32) for s in sequences),
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(text={"title": ("a", "b")}), r"items.text\['title'\] has 2 entries, expected 3"),
        (dict(attributes=((),)), "items.attributes has 1 entries, expected 3"),
        (dict(bids=np.ones(4, np.float32)), r"items.bids has shape \(4,\), expected \(3,\)"),
    ],
)
def test_items_reject_inconsistent_lengths(overrides, message):
    with pytest.raises(ValueError, match=message):
        make_items(3, **overrides)


def test_document_joins_nonempty_fields_in_order():
    items = make_items(3)
    assert len(items) == 3
    assert items.document(0) == "title 0 . acme"
    assert items.document(1) == "title 1"  # empty brand left out
    assert items.document(0, fields=("brand", "title")) == "acme . title 0"
    assert items.document(0, fields=("description",)) == ""  # a field the source lacks


def test_dataset_rejects_mismatched_users():
    with pytest.raises(ValueError, match="2 user ids but 1 sequences"):
        SeqRecDataset(
            name="bad",
            items=make_items(),
            user_ids=("u0", "u1"),
            sequences=(np.array([0, 1, 2], np.int32),),
        )


def test_dataset_sizes_and_stats():
    dataset = make_dataset([[0, 1, 2], [0, 1, 2, 1, 0], [0, 0, 0]])
    assert (dataset.num_users, dataset.num_items, dataset.num_interactions) == (3, 3, 11)
    assert dataset.stats() == {
        "users": 3,
        "items": 3,
        "interactions": 11,
        "avg_seq_len": pytest.approx(11 / 3),
        "median_seq_len": 3.0,
        "min_seq_len": 3,
        "max_seq_len": 5,
        "density": pytest.approx(11 / 9),
        "min_item_popularity": 2,  # item 2
        "max_item_popularity": 6,  # item 0
    }


def test_stats_of_empty_dataset_is_a_data_error():
    dataset = SeqRecDataset(name="empty", items=make_items(), user_ids=(), sequences=())
    with pytest.raises(DataFormatError, match="<data>: dataset 'empty' has no users"):
        dataset.stats()


def test_validate_sequences_accepts_good_input():
    validate_sequences([np.array([0, 1, 2]), np.array([2, 1, 0, 1])], 3, path="seq.txt")


@pytest.mark.parametrize(
    ("sequences", "num_items", "lines", "message"),
    [
        ([[0, 1, 2], [0, 1]], 3, [4, 7], "seq.txt:7: sequence too short: 2 items"),
        ([[0, 1, 2], [0, 9, 1]], 3, [4, 7], "seq.txt:7: unknown item id 9"),
        ([[0, -1, 2]], 3, [12], "seq.txt:12: unknown item id -1"),
        ([[0, 5, 2]], 3, None, "seq.txt: unknown item id 5"),
        ([[0, 1, 2]], 0, None, "seq.txt: empty catalog: no items"),
        ([], 3, None, "seq.txt: no users"),
    ],
)
def test_validate_sequences_names_path_and_line(sequences, num_items, lines, message):
    arrays = [np.asarray(s, np.int64) for s in sequences]
    with pytest.raises(DataFormatError) as error:
        validate_sequences(arrays, num_items, path="seq.txt", lines=lines)
    assert str(error.value).startswith(message)
    assert error.value.path == "seq.txt"


def test_validate_sequences_min_length_is_configurable():
    with pytest.raises(DataFormatError, match="needs >= 4"):
        validate_sequences([np.array([0, 1, 2])], 3, path="seq.txt", min_length=4)


def test_file_sha256_matches_hashlib_across_blocks(tmp_path):
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 5)  # spans several 1 MiB blocks
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    assert file_sha256(path) == hashlib.sha256(data).hexdigest()
