"""Word-like item text for the synthetic world, generated from its topic hierarchy.

Every node of the topic tree (top category > subcategory > ... > leaf topic) gets a made-up but
pronounceable name and a few descriptive words; every leaf topic gets its own brands. An item's
text is then a category path of node names, a brand of its leaf topic, and a title of words of its
nodes plus shared modifier words. So the text carries the topic structure (a bag-of-words
embedding recovers it) without any real-world vocabulary, and the same seed gives the same text.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

_ONSETS = ("b", "c", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z",
           "br", "cr", "dr", "fl", "gr", "pl", "st", "tr", "sh")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "", "n", "r", "l", "s", "x", "m")

TITLE_SEPARATOR = " "
PATH_SEPARATOR = ","  # The loaders' category-path convention (LETTER style).


def make_words(rng: np.random.Generator, count: int) -> list[str]:
    """`count` distinct lower-case word-like tokens, mostly of 2 syllables."""
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < count:
        syllables = 2 if rng.random() < 0.7 else 3
        parts = [
            _ONSETS[rng.integers(len(_ONSETS))]
            + _VOWELS[rng.integers(len(_VOWELS))]
            + _CODAS[rng.integers(len(_CODAS))]
            for _ in range(syllables)
        ]
        word = "".join(parts)
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


@dataclasses.dataclass(frozen=True)
class TopicVocabulary:
    """Names and words of the topic tree, all distinct tokens.

    Nodes of level l are numbered 0 .. prod(branching[:l+1])-1 in tree order, so node j of
    level l+1 has parent j // branching[l+1]. Leaf topic k owns brands
    k * brands_per_topic .. (k+1) * brands_per_topic - 1.

    Attributes:
      node_names: per level, per node, a capitalised name (used in the category path).
      node_words: per level, per node, descriptive lower-case words (used in titles).
      brands: capitalised brand names, grouped by leaf topic as above.
      modifiers: topic-free words shared by all items (noise in titles).
    """

    node_names: tuple[tuple[str, ...], ...]
    node_words: tuple[tuple[tuple[str, ...], ...], ...]
    brands: tuple[str, ...]
    modifiers: tuple[str, ...]

    @property
    def brands_per_topic(self) -> int:
        return len(self.brands) // len(self.node_names[-1])


def make_vocabulary(
    rng: np.random.Generator,
    branching: tuple[int, ...],
    words_per_node: int,
    brands_per_topic: int,
    num_modifiers: int,
) -> TopicVocabulary:
    """Draws all tokens of the tree at once so names, words and brands never collide."""
    if words_per_node < 2:
        raise ValueError(f"words_per_node must be >= 2 (titles use 2 leaf words): {words_per_node}")
    level_sizes = [math.prod(branching[: level + 1]) for level in range(len(branching))]
    num_nodes = sum(level_sizes)
    num_brands = level_sizes[-1] * brands_per_topic
    pool = iter(make_words(rng, num_nodes * (1 + words_per_node) + num_brands + num_modifiers))

    def take(n: int) -> tuple[str, ...]:
        return tuple(next(pool) for _ in range(n))

    node_names = tuple(tuple(w.capitalize() for w in take(size)) for size in level_sizes)
    node_words = tuple(tuple(take(words_per_node) for _ in range(size)) for size in level_sizes)
    brands = tuple(w.capitalize() for w in take(num_brands))
    return TopicVocabulary(node_names, node_words, brands, take(num_modifiers))


def item_texts(
    rng: np.random.Generator,
    vocab: TopicVocabulary,
    item_path_nl: np.ndarray,
    item_brand_n: np.ndarray,
    title_noise: float,
    modifiers_per_title: int = 2,
) -> dict[str, tuple[str, ...]]:
    """Per item: title, category path and brand.

    The title is "Brand modifiers... w_0 w_1 ... w_L-1 w_L-1'": one descriptive word per level
    of the item's path and a second leaf word. With probability `title_noise` each descriptive
    word is replaced by the word of a random node of the same level, so titles are informative
    but not a lookup key.

    Args:
      item_path_nl: int [N, L], the item's node index at each level.
      item_brand_n: int [N], index into `vocab.brands`.
    """
    n, num_levels = item_path_nl.shape
    words_per_node = len(vocab.node_words[0][0])
    # Slots: one word per level, then the second leaf word.
    slot_level = list(range(num_levels)) + [num_levels - 1]
    num_slots = len(slot_level)
    level_sizes = np.array([len(names) for names in vocab.node_names])
    slot_nodes = item_path_nl[:, slot_level]
    noisy = rng.random((n, num_slots)) < title_noise
    random_nodes = rng.integers(0, level_sizes[slot_level], size=(n, num_slots))
    slot_nodes = np.where(noisy, random_nodes, slot_nodes)
    # Two distinct word choices for the leaf slots of one node; other slots take one word.
    first = rng.integers(0, words_per_node, size=(n, num_slots))
    first[:, -1] = (first[:, -2] + rng.integers(1, words_per_node, size=n)) % words_per_node
    # Distinct modifiers per title: the first few of a random order of all of them.
    modifier_ids = rng.random((n, len(vocab.modifiers))).argsort(axis=1)[:, :modifiers_per_title]

    titles, paths, brands = [], [], []
    for i in range(n):
        brand = vocab.brands[item_brand_n[i]]
        words = [vocab.node_words[lvl][slot_nodes[i, s]][first[i, s]]
                 for s, lvl in enumerate(slot_level)]
        mods = [vocab.modifiers[m] for m in modifier_ids[i]]
        titles.append(TITLE_SEPARATOR.join([brand, *mods, *words]))
        paths.append(PATH_SEPARATOR.join(
            vocab.node_names[lvl][item_path_nl[i, lvl]] for lvl in range(num_levels)
        ))
        brands.append(brand)
    return {"title": tuple(titles), "categories": tuple(paths), "brand": tuple(brands)}
