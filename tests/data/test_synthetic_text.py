"""Word-like item text from the topic tree: distinct tokens; paths and titles follow the tree."""

import numpy as np
import pytest

from sgrec_jax.data.synthetic_text import (
    PATH_SEPARATOR,
    TITLE_SEPARATOR,
    item_texts,
    make_vocabulary,
    make_words,
)

BRANCHING = (2, 3)


def _vocab(seed: int = 0):
    return make_vocabulary(np.random.default_rng(seed), BRANCHING, words_per_node=3,
                           brands_per_topic=2, num_modifiers=5)


def test_make_words_distinct_and_seeded():
    words = make_words(np.random.default_rng(1), 300)
    assert len(set(words)) == 300
    assert all(w.isalpha() and w.islower() for w in words)
    assert words == make_words(np.random.default_rng(1), 300)
    assert words != make_words(np.random.default_rng(2), 300)


def test_vocabulary_shapes_and_no_collisions():
    vocab = _vocab()
    assert [len(names) for names in vocab.node_names] == [2, 6]
    assert [len(words) for words in vocab.node_words] == [2, 6]
    assert len(vocab.brands) == 12 and vocab.brands_per_topic == 2
    tokens = [
        *(n.lower() for names in vocab.node_names for n in names),
        *(w for level in vocab.node_words for words in level for w in words),
        *(b.lower() for b in vocab.brands),
        *vocab.modifiers,
    ]
    assert len(tokens) == len(set(tokens)) == 8 * 4 + 12 + 5
    with pytest.raises(ValueError, match="words_per_node"):
        make_vocabulary(np.random.default_rng(0), BRANCHING, 1, 2, 5)


def test_item_texts_follow_the_tree():
    vocab = _vocab()
    leaf = np.arange(30) % 6
    path_nl = np.stack([leaf // 3, leaf], axis=1)
    brand_n = leaf * 2 + np.arange(30) % 2
    text = item_texts(np.random.default_rng(0), vocab, path_nl, brand_n, title_noise=0.0)
    assert set(text) == {"title", "categories", "brand"}
    for i in range(30):
        assert text["categories"][i] == PATH_SEPARATOR.join(
            [vocab.node_names[0][leaf[i] // 3], vocab.node_names[1][leaf[i]]]
        )
        brand, *rest = text["title"][i].split(TITLE_SEPARATOR)
        assert brand == text["brand"][i] == vocab.brands[brand_n[i]]
        mods, words = rest[:2], rest[2:]
        assert len(set(mods)) == 2 and set(mods) <= set(vocab.modifiers)
        # Without noise: one top word, then two distinct leaf words, all of the item's nodes.
        assert words[0] in vocab.node_words[0][leaf[i] // 3]
        assert set(words[1:]) <= set(vocab.node_words[1][leaf[i]]) and words[1] != words[2]


def test_title_noise_swaps_words():
    vocab = _vocab()
    leaf = np.arange(200) % 6
    path_nl = np.stack([leaf // 3, leaf], axis=1)
    text = item_texts(np.random.default_rng(0), vocab, path_nl, leaf * 2, title_noise=0.5)
    own = [set(vocab.node_words[1][k]) for k in leaf]
    foreign = [
        not set(t.split(TITLE_SEPARATOR)[-2:]) <= own[i] for i, t in enumerate(text["title"])
    ]
    assert 0.3 < np.mean(foreign) < 0.95
