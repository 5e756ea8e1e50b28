"""The "text" source: SentencePiece + TF-IDF + SVD, on tiny catalogues and on Scientific."""

import collections
import time

import numpy as np
import pytest
import scipy.sparse
import sentencepiece as spm

from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.data.load import load_dataset
from sgrec_jax.embeddings import item_embeddings
from sgrec_jax.embeddings.text import SPM_MODEL_FILE, tfidf

TOPICS = {
    "lipstick": [
        "Matte Red Lipstick long lasting lip colour",
        "Velvet lipstick lip liner red matte finish",
        "Nude lipstick creamy lip colour",
        "Lip gloss and lipstick set pink lip",
    ],
    "drill": [
        "Cordless Drill Driver 18V battery charger",
        "Hammer drill cordless with two battery packs",
        "Steel drill bits for cordless drill",
        "Impact driver battery charger kit cordless",
    ],
    "coffee": [
        "Whole bean coffee dark roast arabica",
        "Ground coffee medium roast arabica beans",
        "Espresso roast coffee beans whole",
        "Decaf coffee roast ground arabica",
    ],
}


def make_dataset(titles: list[str], categories: list[str] | None = None) -> SeqRecDataset:
    n = len(titles)
    text = {f: ("",) * n for f in TEXT_FIELDS}
    text["title"] = tuple(titles)
    if categories is not None:
        text["categories"] = tuple(categories)
    items = Items(
        ids=tuple(str(i) for i in range(n)),
        text=text,
        attributes=((),) * n,
        bids=np.ones(n, np.float32),
        bid_source="test",
    )
    return SeqRecDataset(
        name="tiny", items=items, user_ids=("u0",), sequences=(np.arange(3, dtype=np.int32),)
    )


TITLES = [t for titles in TOPICS.values() for t in titles]
TOPIC_OF = np.repeat(np.arange(len(TOPICS)), 4)


def test_shape_normalisation_and_determinism():
    dataset = make_dataset(TITLES)
    x = item_embeddings("text", dataset, dim=5, seed=0)
    assert x.shape == (12, 5) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(item_embeddings("text", dataset, dim=5, seed=0), x)


def test_items_sharing_words_are_closer():
    for model_type in ("unigram", "bpe"):
        x = item_embeddings("text", make_dataset(TITLES), dim=5, seed=0, model_type=model_type)
        cos = x @ x.T
        same = TOPIC_OF[:, None] == TOPIC_OF[None, :]
        off_diagonal = ~np.eye(12, dtype=bool)
        assert cos[same & off_diagonal].mean() > cos[~same].mean() + 0.3, model_type
        np.fill_diagonal(cos, -np.inf)
        np.testing.assert_array_equal(TOPIC_OF[cos.argmax(axis=1)], TOPIC_OF, model_type)


def test_item_without_text_still_gets_a_unit_row():
    x = item_embeddings("text", make_dataset(TITLES + [""]), dim=5, seed=0)
    assert x.shape == (13, 5)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-6)
    assert np.abs(x[:12] @ x[12]).max() < 0.99  # a direction of its own, not a copy


def test_workdir_keeps_the_sentencepiece_model(tmp_path):
    workdir = tmp_path / "run"
    item_embeddings("text", make_dataset(TITLES), dim=5, seed=0, workdir=workdir)
    processor = spm.SentencePieceProcessor(model_file=str(workdir / SPM_MODEL_FILE))
    pieces = processor.encode("Cordless DRILL", out_type=str)
    assert "▁cordless" in pieces  # trained on the catalogue, case-folded


def test_fields_option_selects_the_document():
    # Titles are all distinct noise; only the categories carry the topic.
    titles = [f"item{i} zq{i}x" for i in range(12)]
    categories = [f"Home,{name}" for name in TOPICS for _ in range(4)]
    dataset = make_dataset(titles, categories)
    with_categories = item_embeddings("text", dataset, dim=4, seed=0)
    cos = with_categories @ with_categories.T
    np.fill_diagonal(cos, -np.inf)
    np.testing.assert_array_equal(TOPIC_OF[cos.argmax(axis=1)], TOPIC_OF)
    with pytest.raises(ValueError, match="no item has any text"):
        item_embeddings("text", make_dataset([""] * 12, categories), dim=4, seed=0,
                        fields=("title",))


def test_tfidf_is_sublinear_smooth_and_row_normalised():
    counts = scipy.sparse.csr_array(np.array([[3.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
    x = tfidf(counts).toarray()
    idf = np.log(4.0 / np.array([2.0, 3.0, 1.0])) + 1.0
    row0 = np.array([1 + np.log(3.0), 1.0, 0.0]) * idf
    np.testing.assert_allclose(x[0], row0 / np.linalg.norm(row0))
    np.testing.assert_allclose(x[1], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(x[2], 0.0)


def test_dim_too_large_for_the_corpus_is_a_clear_error():
    with pytest.raises(ValueError, match="dim=12 must be < min"):
        item_embeddings("text", make_dataset(TITLES), dim=12, seed=0)


@pytest.mark.real_data
def test_scientific_items_of_a_leaf_category_are_closer(scientific_dir):
    dataset = load_dataset("letter", scientific_dir)
    start = time.perf_counter()
    x = item_embeddings("text", dataset, dim=64, seed=0)
    seconds = time.perf_counter() - start
    print(f"text embeddings of {dataset.num_items} Scientific items: {seconds:.1f} s")
    assert x.shape == (dataset.num_items, 64)

    by_leaf = collections.defaultdict(list)
    for i, path in enumerate(dataset.items.text["categories"]):
        if path:
            by_leaf[path.split(",")[-1].strip()].append(i)
    rng = np.random.default_rng(0)
    same = []
    for members in by_leaf.values():
        if len(members) > 1:
            a, b = rng.choice(members, size=(2, 10))
            same.append(np.sum(x[a[a != b]] * x[b[a != b]], axis=1))
    same_cos = np.concatenate(same).mean()
    a, b = rng.integers(0, dataset.num_items, size=(2, 5000))
    random_cos = np.sum(x[a[a != b]] * x[b[a != b]], axis=1).mean()
    print(f"mean cosine: same leaf category {same_cos:.3f}, random pairs {random_cos:.3f}")
    assert same_cos > random_cos + 0.2
