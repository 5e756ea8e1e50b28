import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.sid.catalog import (
    allowed_mask,
    build_catalog,
    item_of_leaf,
    item_of_sid,
    next_node,
)
from sgrec_jax.sid.dedup import append_dedup_level

VOCAB = (5, 4, 6)


@pytest.fixture(scope="module")
def codes():
    """60 items over a small vocabulary, with collisions resolved by a dedup level."""
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, v, 60) for v in VOCAB], 1)
    deduped, size = append_dedup_level(codes)
    assert size > 1  # the fixture does exercise the dedup level
    return deduped, (*VOCAB, size)


@pytest.fixture(scope="module")
def catalog(codes):
    return jax.device_put(build_catalog(*codes))


_mask = jax.jit(allowed_mask)
_next = jax.jit(next_node)


def test_enumerates_exactly_the_item_sids(codes, catalog):
    codes_nl, _ = codes
    # Breadth-first walk of every allowed path, using only the jitted lookups.
    nodes, prefixes = np.zeros(1, np.int32), [()]
    for level in range(catalog.num_levels):
        mask = np.asarray(_mask(catalog, level, jnp.asarray(nodes)))
        rows, tokens = np.nonzero(mask)
        nodes = np.asarray(_next(catalog, level, jnp.asarray(nodes[rows]), jnp.asarray(tokens)))
        assert (nodes >= 0).all()
        prefixes = [prefixes[r] + (t,) for r, t in zip(rows.tolist(), tokens.tolist())]
    items = np.asarray(item_of_leaf(catalog, jnp.asarray(nodes)))
    found = dict(zip(prefixes, items.tolist()))
    assert len(found) == len(prefixes)  # no path enumerated twice
    expected = {tuple(row): item for item, row in enumerate(codes_nl.tolist())}
    assert found == expected


def test_allowed_mask_equals_dense_masks(catalog):
    for level, dense in enumerate(catalog.dense_masks()):
        nodes = jnp.arange(-1, catalog.num_nodes[level] + 1)  # plus -1 and one past the end
        mask = np.asarray(_mask(catalog, level, nodes))
        np.testing.assert_array_equal(mask[1:-1], dense)
        assert not mask[0].any() and not mask[-1].any()


def test_rejects_invalid_sids(codes, catalog):
    codes_nl, vocab = codes
    rng = np.random.default_rng(1)
    queries = np.stack([rng.integers(-1, v + 1, 2000) for v in vocab], 1)
    queries = np.concatenate([queries, codes_nl])
    expected = {tuple(row): item for item, row in enumerate(codes_nl.tolist())}
    want = [expected.get(tuple(row), -1) for row in queries.tolist()]
    got = np.asarray(jax.jit(item_of_sid)(catalog, jnp.asarray(queries)))
    np.testing.assert_array_equal(got, want)
    assert (got == -1).sum() > 1000  # most random tuples are not SIDs


def test_greedy_decoding_in_scan_with_traced_level(codes, catalog):
    """A jitted lax.scan over levels, the catalog an argument, picks the smallest/largest SID."""
    codes_nl, _ = codes

    @jax.jit
    def decode(catalog):
        def step(node_b, level):
            mask_bv = allowed_mask(catalog, level, node_b)
            lowest = jnp.argmax(mask_bv[0])
            highest = mask_bv.shape[1] - 1 - jnp.argmax(mask_bv[1, ::-1])
            token_b = jnp.stack([lowest, highest]).astype(jnp.int32)
            return next_node(catalog, level, node_b, token_b), token_b

        leaf_b, tokens_lb = jax.lax.scan(
            step, jnp.zeros(2, jnp.int32), jnp.arange(catalog.num_levels)
        )
        return item_of_leaf(catalog, leaf_b), tokens_lb.T

    items, sids = decode(catalog)
    order = np.lexsort(codes_nl.T[::-1])
    np.testing.assert_array_equal(items, [order[0], order[-1]])
    np.testing.assert_array_equal(sids, codes_nl[[order[0], order[-1]]])


def test_layout_and_size(codes):
    codes_nl, vocab = codes
    catalog = build_catalog(codes_nl, vocab)
    n = len(codes_nl)
    assert catalog.num_nodes[0] == 1 and catalog.num_nodes[-1] == n
    assert catalog.vocab_sizes == vocab and catalog.vocab_size == max(vocab)
    assert catalog.child_token.dtype == np.int16
    np.testing.assert_array_equal(catalog.item_leaf[catalog.leaf_item], np.arange(n))
    for level in range(catalog.num_levels):
        starts = catalog.level_child_start(level)
        assert starts[0] == 0 and starts[-1] == catalog.num_nodes[level + 1]
        tokens = catalog.level_child_token(level)
        for a, b in zip(starts[:-1], starts[1:]):
            assert np.all(np.diff(tokens[a:b]) > 0)  # strictly ascending within a parent
    arrays = (catalog.child_start, catalog.child_token, catalog.leaf_item, catalog.item_leaf)
    assert catalog.bytes_per_item() == sum(a.nbytes for a in arrays) / n


def test_rejects_duplicates_and_out_of_vocab_codes():
    with pytest.raises(ValueError, match=r"items 0 and 2 share the SID \(1, 2\)"):
        build_catalog(np.array([[1, 2], [0, 0], [1, 2]]))
    with pytest.raises(ValueError, match="level 1 has code 4 >= vocabulary size 3"):
        build_catalog(np.array([[1, 4]]), (2, 3))
    with pytest.raises(ValueError, match="SIDs have 1 levels"):
        item_of_sid(build_catalog(np.array([[1, 2]])), jnp.zeros((1, 1), jnp.int32))


def test_million_item_catalog_builds_compactly():
    # Vectorised build: a second or so. (10M items: about 4 s and 14.6 bytes per item.)
    rng = np.random.default_rng(0)
    codes_nl, size = append_dedup_level(rng.integers(0, 256, (1_000_000, 3)))
    catalog = build_catalog(codes_nl, (256, 256, 256, size))
    assert catalog.num_nodes[:3] == (1, 256, 65536) and catalog.num_nodes[-1] == 1_000_000
    assert catalog.bytes_per_item() < 17  # level 3 is nearly one node per item at 1M
    probe = codes_nl[::10_000]
    got = np.asarray(item_of_sid(catalog, jnp.asarray(probe)))
    np.testing.assert_array_equal(got, np.arange(0, 1_000_000, 10_000))
