"""ArrayRecord shards: the written examples are leave_one_out's, and bad shards fail loudly."""

import json
import os

import numpy as np
import pytest
from array_record.python import array_record_module

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.shards import (
    MANIFEST,
    SPLITS,
    ShardedExamples,
    ShardWriter,
    read_side_table,
    write_shards,
)
from sgrec_jax.data.sources import check_data_source, load_splits
from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from sgrec_jax.data.synthetic import load_synthetic

H = 6


def tiny_dataset(**overrides):
    """A synthetic world of 40 users (241 training examples), built in milliseconds."""
    return load_synthetic(None, **{"num_users": 40, "num_items": 60, "branching": (2, 2),
                                   **overrides})


@pytest.fixture(scope="module")
def dataset():
    return tiny_dataset()


@pytest.fixture
def shards(dataset, tmp_path):
    """Shards of `dataset` in records of 4 examples (the last of each split short), 12 records
    a file, written 7 users at a time (so records straddle user blocks)."""
    directory = tmp_path / "shards"
    write_shards(dataset, directory, max_history=H, examples_per_shard=50, examples_per_record=4,
                 users_per_block=7,
                 side_tables={"sids": {"codes_nl": np.arange(120).reshape(60, 2)}})
    return directory


def manifest_of(directory):
    return json.loads((directory / MANIFEST).read_text())


def test_every_split_is_leave_one_out_in_order(dataset, shards):
    expected = leave_one_out(dataset, H)
    manifest = manifest_of(shards)
    assert len(manifest["splits"]["train"]["files"]) > 2  # the reads cross file boundaries
    for split in SPLITS:
        examples = ShardedExamples(shards, split).to_examples()
        want = getattr(expected, split)
        assert manifest["splits"][split]["num_examples"] == len(want)
        for field in ("history", "target", "user"):
            np.testing.assert_array_equal(getattr(examples, field), getattr(want, field),
                                          err_msg=f"{split}.{field}")


def test_records_pack_examples_and_only_the_last_is_short(dataset, shards):
    manifest = manifest_of(shards)
    assert manifest["examples_per_record"] == 4
    train = manifest["splits"]["train"]
    assert [f["examples"] for f in train["files"]] == [48] * 5 + [1]
    assert [f["records"] for f in train["files"]] == [12] * 5 + [1]


def test_rows_read_in_any_order_match_the_batch_layout(dataset, shards):
    train = leave_one_out(dataset, H).train
    rows = np.array([17, 3, 230, 3, 99, 0])
    batch = ShardedExamples(shards).read(rows)
    np.testing.assert_array_equal(batch["history"], train.history[rows])
    np.testing.assert_array_equal(batch["history_mask"], train.history[rows] != PAD_ITEM)
    np.testing.assert_array_equal(batch["target"], train.target[rows])
    np.testing.assert_array_equal(batch["user"], train.user[rows])
    assert batch["history"].dtype == batch["target"].dtype == batch["user"].dtype == np.int32


def test_manifest_and_side_tables(dataset, shards):
    manifest = manifest_of(shards)
    assert manifest["max_history"] == H
    assert manifest["dataset"]["num_items"] == dataset.num_items
    assert manifest["dataset"]["num_interactions"] == dataset.num_interactions
    items = read_side_table(shards, "items")
    assert items["ids"].tolist() == list(dataset.items.ids)
    np.testing.assert_array_equal(items["bids"], dataset.items.bids)
    np.testing.assert_array_equal(read_side_table(shards, "sids")["codes_nl"],
                                  np.arange(120).reshape(60, 2))


def test_existing_shards_are_never_overwritten(dataset, shards):
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(dataset, shards, max_history=H)


def test_splits_come_from_the_configured_source(dataset, shards):
    from_shards = load_splits(dataset, max_history=H, source="array_record", shards_dir=shards)
    in_memory = load_splits(dataset, max_history=H)
    assert isinstance(from_shards.train, ShardedExamples)
    assert len(from_shards.train) == len(in_memory.train)
    for split in ("valid", "test"):  # left in the shards until a stage reads its rows
        assert isinstance(getattr(from_shards, split), ShardedExamples)
        np.testing.assert_array_equal(getattr(from_shards, split).to_examples().history,
                                      getattr(in_memory, split).history)


def test_shards_of_other_data_are_refused(shards):
    other = load_synthetic(None, bid_seed=1, num_users=40, num_items=60, branching=(2, 2))
    with pytest.raises(DataFormatError, match="written from another dataset") as error:
        load_splits(other, max_history=H, source="array_record", shards_dir=shards)
    assert str(shards / MANIFEST) in str(error.value)
    with pytest.raises(DataFormatError, match="max_history 6, the config says 5"):
        load_splits(tiny_dataset(), max_history=5, source="array_record", shards_dir=shards)


@pytest.mark.parametrize("source, shards_dir, buckets, message", [
    ("disk", "", (), "data.source must be one of memory, array_record"),
    ("array_record", "", (), "needs data.shards_dir"),
    ("array_record", "d", (3, 8), "length_buckets .* not supported"),
])
def test_bad_source_settings_fail_before_any_work(source, shards_dir, buckets, message):
    with pytest.raises(ValueError, match=message):
        check_data_source(source, shards_dir, buckets)


# -- bad input ------------------------------------------------------------------------------------


def first_train_file(directory):
    return directory / manifest_of(directory)["splits"]["train"]["files"][0]["name"]


def test_truncated_shard_fails_at_open_naming_the_file(shards):
    path = first_train_file(shards)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(DataFormatError, match="truncated") as error:
        ShardedExamples(shards)
    assert str(error.value).startswith(f"{path}:")


def test_missing_shard_and_missing_manifest_fail(shards):
    path = first_train_file(shards)
    path.unlink()
    with pytest.raises(DataFormatError, match="missing") as error:
        ShardedExamples(shards)
    assert str(path) in str(error.value)
    (shards / MANIFEST).unlink()
    with pytest.raises(DataFormatError, match="no shard manifest"):
        ShardedExamples(shards)


def test_record_count_differing_from_the_manifest_fails(shards):
    manifest = manifest_of(shards)
    manifest["splits"]["train"]["files"][1]["records"] += 1
    (shards / MANIFEST).write_text(json.dumps(manifest))
    path = shards / manifest["splits"]["train"]["files"][1]["name"]
    with pytest.raises(DataFormatError, match="holds 12 records, the manifest says 13") as error:
        ShardedExamples(shards)
    assert str(path) in str(error.value)


def corrupt(path) -> None:
    """Flips 32 bytes among the file's first records, keeping its size (a small file is
    mostly padding to Riegeli's block size, where a flip would harm nothing)."""
    with open(path, "r+b") as f:
        f.seek(1024)
        data = f.read(32)
        f.seek(1024)
        f.write(bytes(b ^ 0xFF for b in data))


def test_corrupt_shard_fails_on_read_naming_the_file(shards):
    path = first_train_file(shards)
    corrupt(path)
    train = ShardedExamples(shards)  # same size and footer: only reading can tell
    with pytest.raises(DataFormatError, match="cannot be read") as error:
        for _ in train.blocks(block_size=16):
            pass
    assert str(error.value).startswith(f"{path}:")


def test_record_of_the_wrong_length_fails(shards):
    path = first_train_file(shards)
    reader = array_record_module.ArrayRecordReader(str(path))
    records = [reader.read([i])[0] for i in range(reader.num_records())]
    reader.close()
    writer = array_record_module.ArrayRecordWriter(str(path), "group_size:1")
    for position, record in enumerate(records):
        writer.write(record[: -4 if position == 3 else None])  # record 3 loses 4 bytes
    writer.close()
    manifest = manifest_of(shards)
    manifest["splits"]["train"]["files"][0]["bytes"] = path.stat().st_size
    (shards / MANIFEST).write_text(json.dumps(manifest))
    train = ShardedExamples(shards)
    train.read(range(12))  # records 0-2 are intact
    with pytest.raises(DataFormatError, match="record 3 has 124 bytes, expected 128") as error:
        train.read(range(16))
    assert str(path) in str(error.value)


def test_a_uri_shard_directory_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"gs://bucket/shards: ArrayRecord shards must be on a"):
        ShardWriter("gs://bucket/shards", max_history=5)
    with pytest.raises(ValueError, match=r"gs://bucket/shards: ArrayRecord shards must be on a"):
        ShardedExamples("gs://bucket/shards")
