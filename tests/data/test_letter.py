import json

import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats.letter import load_letter
from sgrec_jax.data.split import leave_one_out
from tests.conftest import data_dir

INTER = {"u7": [0, 1, 2], "u3": [2, 3, 0, 1]}
ITEMS = {
    "0": {"title": "Tape &amp; glue", "description": "Strong", "brand": "3M",
          "categories": "Industrial & Scientific,Tapes, Adhesives & Sealants"},
    "1": {"title": "Screw", "description": "", "brand": "", "categories": ""},
    "2": {"title": "Nut"},
    "3": {"title": "Bolt", "description": None, "brand": "Acme", "categories": "A,B"},
}


def make_folder(path, inter=INTER, items=ITEMS, prefix="Tiny"):
    path.mkdir(exist_ok=True)
    for suffix, obj in (("inter", inter), ("item", items)):
        text = obj if isinstance(obj, str) else json.dumps(obj, indent=2)
        (path / f"{prefix}.{suffix}.json").write_text(text)
    return path


def test_loads_sequences_and_text(tmp_path):
    ds = load_letter(make_folder(tmp_path / "sci"))
    assert ds.name == "sci"
    assert ds.user_ids == ("u7", "u3")
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 3, 0, 1]]
    assert ds.items.ids == ("0", "1", "2", "3")
    text = ds.items.text
    assert text["title"] == ("Tape & glue", "Screw", "Nut", "Bolt")
    assert text["categories"][0] == "Industrial & Scientific,Tapes, Adhesives & Sealants"
    assert text["brand"] == ("3M", "", "", "Acme")
    assert text["description"] == ("Strong", "", "", "")
    assert ds.items.attributes == ((),) * 4
    assert {p.rsplit("/", 1)[1] for p in ds.source_files} == {"Tiny.inter.json", "Tiny.item.json"}


def test_file_discovery_errors(tmp_path):
    folder = make_folder(tmp_path / "d")
    (folder / "Other.inter.json").write_text("{}")
    with pytest.raises(DataFormatError, match=r"exactly one \*\.inter\.json.*found 2") as info:
        load_letter(folder)
    assert info.value.path == str(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match="found 0: none"):
        load_letter(empty)
    with pytest.raises(DataFormatError, match="no such directory"):
        load_letter(tmp_path / "absent")


BAD_INTER = {
    "non_integer_item": ({"u1": [0, "1", 2]}, "user 'u1': expected a list of integer"),
    "not_a_list": ({"u1": 3}, "user 'u1': expected a list"),
    "unknown_item": ({"u1": [0, 1, 2], "u2": [0, 4, 1]}, "user 'u2': unknown item id 4"),
    "negative_item": ({"u1": [0, -1, 2]}, "user 'u1': unknown item id -1"),
    "too_short": ({"u1": [0, 1, 2], "u2": [1, 2]}, "user 'u2': sequence too short"),
    "duplicated_user": ('{"u1": [0, 1, 2],\n "u1": [1, 2, 3]}', "duplicated key 'u1'"),
    "no_users": ({}, "no users"),
    "malformed": ('{"u1": [0, 1, 2]\n "u2": [1, 2, 3]}', "malformed JSON"),
}


@pytest.mark.parametrize("case", sorted(BAD_INTER))
def test_bad_interactions_name_file_and_user(tmp_path, case):
    inter, words = BAD_INTER[case]
    folder = make_folder(tmp_path / "d", inter=inter)
    with pytest.raises(DataFormatError) as info:
        load_letter(folder)
    assert info.value.path == str(folder / "Tiny.inter.json")
    assert words in str(info.value)
    assert info.value.line == (2 if case == "malformed" else None)


BAD_ITEMS = {
    "gap": ({"0": {}, "1": {}, "3": {}}, "item 2 is missing"),
    "non_integer_key": ({"0": {}, "x": {}}, "item id 'x' is not an integer"),
    "empty": ({}, "empty catalog"),
    "not_an_object": ({"0": {}, "1": "title"}, "item '1': expected an object"),
    "bad_field": ({"0": {"title": 5}}, "item '0': field 'title'"),
}


@pytest.mark.parametrize("case", sorted(BAD_ITEMS))
def test_bad_items_name_file_and_item(tmp_path, case):
    items, words = BAD_ITEMS[case]
    folder = make_folder(tmp_path / "d", inter={"u": [0, 0, 0]}, items=items)
    with pytest.raises(DataFormatError) as info:
        load_letter(folder)
    assert info.value.path == str(folder / "Tiny.item.json")
    assert words in str(info.value)


@pytest.mark.real_data
def test_real_scientific():
    ds = load_letter(data_dir("amazon2018_scientific"))
    stats = ds.stats()
    assert (stats["users"], stats["items"], stats["interactions"]) == (8317, 4344, 58492)
    assert (stats["min_seq_len"], stats["max_seq_len"]) == (5, 78)
    assert all(ds.items.text["title"])
    assert sum(1 for b in ds.items.text["brand"] if b) == 4332  # 99.7% per PROVENANCE.md
    splits = leave_one_out(ds)
    assert len(splits.test) == len(splits.valid) == 8317
