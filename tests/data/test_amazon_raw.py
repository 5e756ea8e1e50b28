import gzip
import json

import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.formats.amazon_raw import (
    Review,
    kcore_filter,
    load_amazon_raw,
    read_meta,
    read_reviews,
    user_sequences,
)
from sgrec_jax.data.formats.p5 import load_p5, write_p5


def write_gz(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    return path


def review(user, asin, time, **extra):
    return json.dumps({"reviewerID": user, "asin": asin, "unixReviewTime": time, **extra})


# Users in file order: ub, ua, uc. Sorted by time: ub = [x, y, z], ua = [z, x, y, w]
# (x and y tie at t=5 and keep file order), uc = [y, z, x, q]. w and q are reviewed once.
REVIEWS = [
    review("ub", "y", 2, overall=1.0),
    review("ua", "w", 9),
    review("ub", "x", 1),
    review("ua", "x", 5),
    review("uc", "q", 8),
    review("ua", "y", 5),
    review("uc", "y", 1),
    review("ua", "z", 3),
    review("ub", "z", 3),
    review("uc", "z", 2),
    review("uc", "x", 4),
]
META_2014 = [
    repr({"asin": "x", "title": "Ex &amp; Co", "categories": [["Beauty", "Nails"], ["Gifts"]],
          "description": "A polish", "related": {"also_bought": ["y"]}}),
    repr({"asin": "y", "title": "Why", "brand": "Acme", "price": 3.5}),
    repr({"asin": "unused", "title": "Not in the dataset"}),
]
META_2018 = [
    json.dumps({"asin": "x", "title": "Ex", "category": ["Industrial &amp; Scientific", "Tape"],
                "description": ["First part.", "Second part."], "brand": "3M"}),
    json.dumps({"asin": "x", "title": "Duplicate record, ignored"}),
    json.dumps({"asin": "z", "title": "Zed", "category": [], "description": []}),
]


def test_user_sequences_sort_stably_in_first_appearance_order(tmp_path):
    reviews = read_reviews(write_gz(tmp_path / "r.json.gz", REVIEWS))
    assert reviews[0] == Review("ub", "y", 2)
    assert user_sequences(reviews) == {
        "ub": ["x", "y", "z"],
        "ua": ["z", "x", "y", "w"],
        "uc": ["y", "z", "x", "q"],
    }


def test_kcore_filter_iterates_to_a_fixed_point():
    # k=2: item "c" (once) goes, which leaves u3 with one item, and then item "d" has one user.
    sequences = {"u1": ["a", "b"], "u2": ["b", "a", "a"], "u3": ["c", "d"], "u4": ["d", "a"]}
    assert kcore_filter(sequences, 2) == {"u1": ["a", "b"], "u2": ["b", "a", "a"]}
    assert kcore_filter(sequences, 1) == sequences
    assert kcore_filter(sequences, 4) == {}


def test_converts_2014_files(tmp_path):
    ds = load_amazon_raw(
        write_gz(tmp_path / "reviews_Tiny_5.json.gz", REVIEWS),
        write_gz(tmp_path / "meta_Tiny.json.gz", META_2014),
        name="tiny",
        kcore=0,
    )
    assert ds.user_ids == ("ub", "ua", "uc")
    assert ds.items.ids == ("x", "y", "z", "w", "q")  # first appearance walking sorted users
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 0, 1, 3], [1, 2, 0, 4]]
    assert ds.items.text["title"] == ("Ex & Co", "Why", "", "", "")
    assert ds.items.text["categories"][0] == "Beauty,Nails; Gifts"
    assert ds.items.text["brand"][1] == "Acme"
    assert ds.items.text["description"][0] == "A polish"
    assert len(ds.source_files) == 2


def test_kcore_drops_rare_items(tmp_path):
    ds = load_amazon_raw(
        write_gz(tmp_path / "r.json.gz", REVIEWS),
        write_gz(tmp_path / "m.json.gz", META_2014),
        name="tiny",
        kcore=3,
    )
    assert ds.items.ids == ("x", "y", "z")
    assert [s.tolist() for s in ds.sequences] == [[0, 1, 2], [2, 0, 1], [1, 2, 0]]


def test_reads_2018_meta(tmp_path):
    meta = read_meta(write_gz(tmp_path / "meta.json.gz", META_2018))
    assert meta["x"] == {
        "title": "Ex",
        "categories": "Industrial & Scientific,Tape",
        "brand": "3M",
        "description": "First part. Second part.",
    }
    assert meta["z"] == {"title": "Zed", "categories": "", "brand": "", "description": ""}
    assert set(read_meta(tmp_path / "meta.json.gz", asins=["z"])) == {"z"}


def test_round_trip_through_p5(tmp_path):
    ds = load_amazon_raw(
        write_gz(tmp_path / "r.json.gz", REVIEWS),
        write_gz(tmp_path / "m.json.gz", META_2014),
        name="tiny",
        kcore=0,
    )
    write_p5(ds, tmp_path / "p5")
    again = load_p5(tmp_path / "p5", name="tiny")
    assert again.user_ids == ds.user_ids and again.items.ids == ds.items.ids
    assert dict(again.items.text) == dict(ds.items.text)
    assert [s.tolist() for s in again.sequences] == [s.tolist() for s in ds.sequences]


@pytest.mark.parametrize(
    "lines, line, words",
    [
        (REVIEWS[:3] + ['{"reviewerID": "u", "asin": '] + REVIEWS[3:], 4, "malformed JSON"),
        (REVIEWS[:1] + [json.dumps({"reviewerID": "u", "asin": "a"})], 2, "unixReviewTime"),
        (REVIEWS[:2] + [review("u", "a", "2014-01-01")], 3, "unixReviewTime"),
        ([review("u", None, 1)], 1, "'asin'"),
    ],
)
def test_malformed_review_names_file_and_line(tmp_path, lines, line, words):
    path = write_gz(tmp_path / "reviews.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        read_reviews(path)
    assert info.value.path == str(path) and info.value.line == line
    assert words in str(info.value)


@pytest.mark.parametrize(
    "lines, line, words",
    [
        (META_2014[:1] + ["{'asin': 'y', 'title': 'unterminated}"], 2, "Python dict literal"),
        (META_2018[:2] + ['{"asin": "q", "title": }'], 3, "malformed JSON"),
        (META_2014[:1] + [repr({"asin": "y", "title": 7})], 2, "'title'"),
        ([repr({"title": "no asin"})], 1, "'asin'"),
    ],
)
def test_malformed_meta_names_file_and_line(tmp_path, lines, line, words):
    path = write_gz(tmp_path / "meta.json.gz", lines)
    with pytest.raises(DataFormatError) as info:
        read_meta(path)
    assert info.value.path == str(path) and info.value.line == line
    assert words in str(info.value)


def test_corrupt_gzip_and_short_sequences(tmp_path):
    bad = tmp_path / "bad.json.gz"
    bad.write_bytes(gzip.compress(("\n".join(REVIEWS) + "\n").encode())[:-30])
    with pytest.raises(DataFormatError, match="unreadable"):
        read_reviews(bad)
    reviews = write_gz(tmp_path / "r.json.gz", REVIEWS + [review("ud", "x", 1)])
    with pytest.raises(DataFormatError, match="user 'ud' has 1 interactions") as info:
        load_amazon_raw(reviews, write_gz(tmp_path / "m.json.gz", META_2014), name="t", kcore=0)
    assert info.value.path == str(reviews)
    with pytest.raises(DataFormatError, match="no users left after the 9-core"):
        load_amazon_raw(reviews, tmp_path / "m.json.gz", name="t", kcore=9)
