import json

import numpy as np
import pytest

from sgrec_jax.data.dataset import TEXT_FIELDS
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats.p5 import load_p5, write_p5
from sgrec_jax.data.split import leave_one_out
from tests.conftest import data_dir

SEQUENCES = "1 1 2 3\n2 3 4 1 2\n3 2 4 3\n"
ASINS = {"1": "A1", "2": "A2", "3": "A3", "4": "A4"}
USERS = {"1": "U1", "2": "U2", "3": "U3"}


def make_folder(path, sequences=SEQUENCES, id2item=None, id2user=None, **files):
    """A tiny P5 folder; `files` maps file names to their text (bytes are written as is)."""
    path.mkdir(exist_ok=True)
    (path / "sequential_data.txt").write_text(sequences)
    datamaps = {"id2user": id2user or USERS, "id2item": ASINS if id2item is None else id2item}
    (path / "datamaps.json").write_text(json.dumps(datamaps, indent=1))
    for name, text in files.items():
        if isinstance(text, bytes):
            (path / name).write_bytes(text)
        else:
            (path / name).write_text(text)
    return path


def meta_line(item, **fields):
    return json.dumps({"p5_item_id": item, **fields}) + "\n"


def test_loads_sequences_ids_and_provenance(tmp_path):
    folder = make_folder(tmp_path / "tiny")
    ds = load_p5(folder)
    assert ds.name == "tiny"
    assert ds.user_ids == ("U1", "U2", "U3")
    assert ds.items.ids == ("A1", "A2", "A3", "A4")
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 3, 0, 1], [1, 3, 2]]
    assert all(s.dtype == np.int32 for s in ds.sequences)
    assert set(ds.items.text) == set(TEXT_FIELDS)
    assert all(t == "" for f in TEXT_FIELDS for t in ds.items.text[f])
    assert ds.items.attributes == ((),) * 4
    assert "simulated bid" in ds.items.bid_source
    assert {p.rsplit("/", 1)[1] for p in ds.source_files} == {
        "sequential_data.txt",
        "datamaps.json",
    }


def test_crlf_and_blank_lines_are_accepted(tmp_path):
    crlf = make_folder(tmp_path / "crlf", sequences=SEQUENCES.replace("\n", "\r\n") + "\r\n")
    lf = make_folder(tmp_path / "lf")
    assert [s.tolist() for s in load_p5(crlf).sequences] == [
        s.tolist() for s in load_p5(lf).sequences
    ]


def test_side_files(tmp_path):
    meta = (
        meta_line(1, asin="A1", title="Salt &amp; Pepper", categories=[["Beauty", "Nails"]])
        + meta_line(2, title="Two", categories=[["Beauty", "Skin"], ["Health", "Care"]])
        + meta_line(3, title="Three", brand=None, description=["Soft,", "gentle"])
    )
    folder = make_folder(
        tmp_path / "d",
        **{
            "item2attributes.json": json.dumps({"1": [5, 7], "4": [7]}),
            "item_meta.jsonl": meta,
            "item_textual_ids.txt": "A1 proxy one\nA2 proxy two\n",
        },
    )
    items = load_p5(folder).items
    assert items.attributes == ((5, 7), (), (), (7,))
    assert items.text["title"] == ("Salt & Pepper", "Two", "Three", "")
    assert items.text["categories"] == ("Beauty,Nails", "Beauty,Skin; Health,Care", "", "")
    assert items.text["description"] == ("", "", "Soft, gentle", "")
    assert items.document(0) == "Salt & Pepper . Beauty,Nails"


def test_textual_ids_are_the_title_without_item_meta(tmp_path):
    folder = make_folder(
        tmp_path / "d", **{"item_textual_ids.txt": "A2 proxy two\nA1 proxy  one\nA3\n"}
    )
    assert load_p5(folder).items.text["title"] == ("proxy one", "proxy two", "", "")


BAD_CASES = {
    "non_integer_token": ("sequential_data.txt", "1 1 2 3\n2 3 x 1\n", {}, 2, "'x' is not an"),
    "float_token": ("sequential_data.txt", "1 1 2 3\n2 3 4.0 1\n", {}, 2, "not an integer"),
    "unknown_item": ("sequential_data.txt", "1 1 2 3\n2 3 5 1\n", {}, 2, "unknown item id 5"),
    "item_zero": ("sequential_data.txt", "1 0 2 3\n", {}, 1, "unknown item id 0"),
    "duplicated_user": ("sequential_data.txt", "1 1 2 3\n2 1 2 3\n1 2 3 4\n", {}, 3, "duplicated"),
    "unknown_user": ("sequential_data.txt", "9 1 2 3\n", {}, 1, "unknown user id 9"),
    "too_short": ("sequential_data.txt", "1 1 2 3\n2 1 2\n", {}, 2, "too short"),
    "malformed_meta": (
        "item_meta.jsonl", None, {"item_meta.jsonl": meta_line(1) + '{"p5_item_id": 2,\n'}, 2,
        "malformed JSON",
    ),
    "meta_unknown_item": (
        "item_meta.jsonl", None, {"item_meta.jsonl": meta_line(1) + meta_line(9)}, 2,
        "unknown item id 9",
    ),
    "meta_asin_mismatch": (
        "item_meta.jsonl", None, {"item_meta.jsonl": meta_line(2, asin="A1")}, 1, "'A1'",
    ),
    "meta_bad_field": (
        "item_meta.jsonl", None, {"item_meta.jsonl": meta_line(1, title=3)}, 1, "'title'",
    ),
    "textual_unknown_asin": (
        "item_textual_ids.txt", None, {"item_textual_ids.txt": "A1 a\nZZ b\n"}, 2, "'ZZ'",
    ),
    "attributes_bad_key": (
        "item2attributes.json", None, {"item2attributes.json": '{"7": [1]}'}, None, "7",
    ),
    "attributes_malformed": (
        "item2attributes.json", None, {"item2attributes.json": '{\n"1": [1],\n}'}, 3, "malformed",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_and_line(tmp_path, case):
    file, sequences, files, line, words = BAD_CASES[case]
    folder = make_folder(tmp_path / "d", sequences=sequences or SEQUENCES, **files)
    with pytest.raises(DataFormatError) as info:
        load_p5(folder)
    assert info.value.path == str(folder / file)
    assert info.value.line == line
    assert words in str(info.value)


def test_empty_catalog(tmp_path):
    folder = make_folder(tmp_path / "d", id2item={})
    with pytest.raises(DataFormatError, match="empty catalog") as info:
        load_p5(folder)
    assert info.value.path.endswith("datamaps.json")


def test_datamaps_with_a_gap(tmp_path):
    folder = make_folder(tmp_path / "d", id2item={"1": "A1", "2": "A2", "4": "A4"})
    with pytest.raises(DataFormatError, match="id 3 is missing"):
        load_p5(folder)


def test_malformed_datamaps_gives_the_json_line(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "datamaps.json").write_text('{"id2item": {"1": "A1",\n "2" "A2"}}')
    with pytest.raises(DataFormatError, match="malformed JSON") as info:
        load_p5(folder)
    assert info.value.line == 2 and info.value.path.endswith("datamaps.json")


def test_missing_files(tmp_path):
    with pytest.raises(DataFormatError, match="no such directory"):
        load_p5(tmp_path / "absent")
    folder = make_folder(tmp_path / "d")
    (folder / "sequential_data.txt").unlink()
    with pytest.raises(DataFormatError, match="no such file") as info:
        load_p5(folder)
    assert info.value.path.endswith("sequential_data.txt")


def test_write_p5_round_trip(tmp_path):
    meta = meta_line(1, title="T &amp; 1", categories=[["A", "B"]]) + meta_line(3, brand="Br")
    original = load_p5(
        make_folder(
            tmp_path / "d",
            **{"item_meta.jsonl": meta, "item2attributes.json": json.dumps({"2": [3]})},
        )
    )
    written = write_p5(original, tmp_path / "out")
    assert {p.name for p in written} == {
        "sequential_data.txt", "datamaps.json", "item_meta.jsonl", "item2attributes.json"
    }
    again = load_p5(tmp_path / "out", name=original.name)
    assert again.user_ids == original.user_ids
    assert again.items.ids == original.items.ids
    assert dict(again.items.text) == dict(original.items.text)
    assert again.items.attributes == original.items.attributes
    assert [s.tolist() for s in again.sequences] == [s.tolist() for s in original.sequences]
    np.testing.assert_array_equal(again.items.bids, original.items.bids)


@pytest.fixture(scope="module")
def beauty():
    return load_p5(data_dir("amazon2014_beauty"), name="beauty")


@pytest.mark.real_data
def test_real_beauty(beauty):
    stats = beauty.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert (stats["min_seq_len"], stats["max_seq_len"]) == (5, 204)
    assert len(leave_one_out(beauty, max_history=20).train) == 131413
    titles = beauty.items.text["title"]
    assert len(titles) == 12101 and all(titles)
    assert not any("&amp;" in t for t in titles)
    assert all(beauty.items.text["categories"])
    assert len({a for attrs in beauty.items.attributes for a in attrs}) == 637
    assert beauty.user_ids[0] == "A1YJEY40YUW4SE" and beauty.items.ids[0] == "B004756YJA"
    assert titles[0] == "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce"
    assert len(beauty.source_files) == 4
