"""The SID catalog: a CSR trie over the items' code tuples, for constrained decoding.

Decoding emits one token per level; only tokens that extend the prefix towards some real item
are allowed. The trie gives, for every valid prefix, its allowed next tokens, as flat arrays a
jitted beam search indexes directly (inside `lax.scan` over levels, the level may be traced) with
no host callback.

Layout. Items are sorted by code tuple. The level-l nodes are the distinct prefixes of length l,
numbered 0.. in sorted order (level 0 has one node, the empty prefix; level L has one leaf per
item). Node ids are local to their level. For l = 0..L-1:
  child_start block l, int32 [num_nodes[l] + 1]: the children of level-l node n are the level-(l+1)
    nodes child_start[n] .. child_start[n+1]-1 (contiguous, because nodes are sorted);
  child_token block l, int16 [num_nodes[l+1]]: the token that leads to each level-(l+1) node,
    ascending within each parent (int32 if a vocabulary exceeds int16).
The blocks are concatenated into one flat array each, with static per-level offsets, so a traced
level indexes them. leaf_item int32 [N] maps leaves to items, item_leaf int32 [N] back.

Cost. `allowed_mask` gathers a window of V = max vocabulary child slots per row and scatters the
valid ones into a [B, V] mask: O(V) per row, no search. `next_node` compares the same window with
the chosen token. Size (`bytes_per_item`): for L = 4 levels (3 x 256 codes + a dedup level)
and 10M random items the trie has 1 / 256 / 65,536 / 7,532,553 / 10M nodes per level and takes
14.6 bytes per item, 146 MB in all (child_start 3.0, child_token 3.5, leaf_item 4, item_leaf 4);
the vectorised numpy build takes about 4 s on one CPU core (dedup of the codes another 5 s).

Pass a catalog into jit as an argument (it is a pytree whose level sizes are static); move it to
the device once with `jax.device_put(catalog)`, or every call copies the host arrays.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.sid.dedup import check_codes, lexicographic_order

_STATIC = dict(static=True)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Catalog:
    """The trie of all item SIDs (see the module docstring for the layout).

    Attributes:
      child_start: int32 flat, level blocks of [num_nodes[l] + 1] child ranges, l = 0..L-1.
      child_token: int16/int32 flat, level blocks of [num_nodes[l+1]] tokens, l = 0..L-1.
      leaf_item: int32 [N] item of each leaf (leaves are in code-tuple order).
      item_leaf: int32 [N] leaf of each item.
      num_nodes: static, L+1 node counts; num_nodes[0] = 1, num_nodes[L] = N.
      vocab_sizes: static, vocabulary size of each of the L levels.
    """

    child_start: jax.Array | np.ndarray
    child_token: jax.Array | np.ndarray
    leaf_item: jax.Array | np.ndarray
    item_leaf: jax.Array | np.ndarray
    num_nodes: tuple[int, ...] = dataclasses.field(metadata=_STATIC)
    vocab_sizes: tuple[int, ...] = dataclasses.field(metadata=_STATIC)

    @property
    def num_levels(self) -> int:
        return len(self.vocab_sizes)

    @property
    def num_items(self) -> int:
        return self.num_nodes[-1]

    @property
    def vocab_size(self) -> int:
        """Width V of the masks: the largest level vocabulary."""
        return max(self.vocab_sizes)

    @property
    def start_offsets(self) -> tuple[int, ...]:
        """Offset of level l's block in `child_start`, l = 0..L-1."""
        return tuple(itertools.accumulate((n + 1 for n in self.num_nodes[:-2]), initial=0))

    @property
    def token_offsets(self) -> tuple[int, ...]:
        """Offset of level l's block in `child_token`, l = 0..L-1."""
        return tuple(itertools.accumulate(self.num_nodes[1:-1], initial=0))

    def level_child_start(self, level: int) -> np.ndarray:
        """Level `level`'s child ranges, int32 [num_nodes[level] + 1] (host copy)."""
        off = self.start_offsets[level]
        return np.asarray(self.child_start[off : off + self.num_nodes[level] + 1])

    def level_child_token(self, level: int) -> np.ndarray:
        """Tokens leading to the level-(level+1) nodes, [num_nodes[level+1]] (host copy)."""
        off = self.token_offsets[level]
        return np.asarray(self.child_token[off : off + self.num_nodes[level + 1]])

    def dense_masks(self) -> list[np.ndarray]:
        """Per level l, bool [num_nodes[l], V]: the allowed next tokens of every node.

        Memory is sum_l num_nodes[l] * V bytes, so only for small catalogs (tests, debugging).
        """
        masks = []
        for level in range(self.num_levels):
            mask = np.zeros((self.num_nodes[level], self.vocab_size), bool)
            fanout = np.diff(self.level_child_start(level))
            parent = np.repeat(np.arange(self.num_nodes[level]), fanout)
            mask[parent, self.level_child_token(level)] = True
            masks.append(mask)
        return masks

    def bytes_per_item(self) -> float:
        """Bytes of all arrays divided by the number of items."""
        arrays = (self.child_start, self.child_token, self.leaf_item, self.item_leaf)
        return sum(a.nbytes for a in arrays) / self.num_items


def build_catalog(codes_nl: np.ndarray, vocab_sizes: Sequence[int] | None = None) -> Catalog:
    """The catalog of the items' SIDs (vectorised numpy; 10M items take seconds).

    Args:
      codes_nl: int [N, L] SID of each item; tuples must be unique (use
        `dedup.append_dedup_level` first).
      vocab_sizes: per-level vocabulary; defaults to 1 + the largest code of each level.
    """
    codes_nl = check_codes(codes_nl)
    n, levels = codes_nl.shape
    if vocab_sizes is None:
        vocab_sizes = tuple(int(v) + 1 for v in codes_nl.max(0))
    vocab_sizes = tuple(int(v) for v in vocab_sizes)
    if len(vocab_sizes) != levels:
        raise ValueError(f"{len(vocab_sizes)} vocabulary sizes for {levels} levels")
    for level, size in enumerate(vocab_sizes):
        top = int(codes_nl[:, level].max())
        if top >= size:
            raise ValueError(f"level {level} has code {top} >= vocabulary size {size}")
    order = lexicographic_order(codes_nl)
    # Level-major layout keeps every per-level pass over contiguous memory.
    sorted_ln = np.ascontiguousarray(codes_nl.T)[:, order]
    # new_ln[l, i]: sorted row i opens a new level-(l+1) node (its length-(l+1) prefix differs).
    new_ln = np.empty((levels, n), bool)
    new_ln[:, 0] = True
    np.not_equal(sorted_ln[:, 1:], sorted_ln[:, :-1], out=new_ln[:, 1:])
    np.logical_or.accumulate(new_ln, axis=0, out=new_ln)
    if not new_ln[-1].all():
        row = int(np.argmin(new_ln[-1]))
        a, b = sorted(int(i) for i in order[row - 1 : row + 1])
        raise ValueError(
            f"items {a} and {b} share the SID {tuple(codes_nl[a].tolist())}; "
            "append a dedup level first (sgrec_jax.sid.dedup.append_dedup_level)"
        )
    token_dtype = np.int16 if max(vocab_sizes) <= np.iinfo(np.int16).max else np.int32
    num_nodes, starts, tokens = [1], [], []
    parent_rows = np.zeros(1, np.int64)  # first sorted row of each level-l node
    for level in range(levels):
        child_rows = np.flatnonzero(new_ln[level])
        # A node's first row also opens its first child, so its rank among child rows is
        # the index of that child.
        rank_n = np.cumsum(new_ln[level], dtype=np.int32) - 1
        starts.append(np.append(rank_n[parent_rows], np.int32(len(child_rows))))
        tokens.append(sorted_ln[level, child_rows].astype(token_dtype))
        num_nodes.append(len(child_rows))
        parent_rows = child_rows
    item_leaf = np.empty(n, np.int32)
    item_leaf[order] = np.arange(n, dtype=np.int32)
    return Catalog(
        child_start=np.concatenate(starts),
        child_token=np.concatenate(tokens),
        leaf_item=order.astype(np.int32),
        item_leaf=item_leaf,
        num_nodes=tuple(num_nodes),
        vocab_sizes=vocab_sizes,
    )


def _child_window(catalog: Catalog, level: int | jax.Array, node_b: jax.Array):
    """The V child slots of each node: local child ids [B, V], validity [B, V], tokens [B, V]."""
    v = catalog.vocab_size
    num_nodes = jnp.asarray(catalog.num_nodes)[level]
    ok_b = (node_b >= 0) & (node_b < num_nodes)
    at_b = jnp.asarray(catalog.start_offsets)[level] + jnp.where(ok_b, node_b, 0)
    child_start = jnp.asarray(catalog.child_start)
    first_b = child_start[at_b]
    end_b = child_start[at_b + 1]
    child_bv = first_b[:, None] + jnp.arange(v, dtype=jnp.int32)[None, :]
    valid_bv = ok_b[:, None] & (child_bv < end_b[:, None])
    slot_bv = jnp.asarray(catalog.token_offsets)[level] + child_bv
    token_bv = jnp.take(jnp.asarray(catalog.child_token), slot_bv, mode="clip").astype(jnp.int32)
    return child_bv, valid_bv, token_bv


def allowed_mask(catalog: Catalog, level: int | jax.Array, node_b: jax.Array) -> jax.Array:
    """bool [B, V]: the tokens that extend each level-`level` node; all False for node -1.

    `level` is a Python int or a traced int32 scalar; V = catalog.vocab_size.
    """
    _, valid_bv, token_bv = _child_window(catalog, level, node_b)
    b, v = token_bv.shape
    cols_bv = jnp.where(valid_bv, token_bv, v)  # out of range: dropped by the scatter
    rows_bv = jnp.broadcast_to(jnp.arange(b)[:, None], (b, v))
    return jnp.zeros((b, v), bool).at[rows_bv, cols_bv].set(True, mode="drop")


def next_node(
    catalog: Catalog, level: int | jax.Array, node_b: jax.Array, token_b: jax.Array
) -> jax.Array:
    """int32 [B]: the level-(level+1) node reached by `token_b` from `node_b`, -1 if invalid."""
    child_bv, valid_bv, token_bv = _child_window(catalog, level, node_b)
    hit_bv = valid_bv & (token_bv == token_b[:, None])
    child_b = jnp.take_along_axis(child_bv, jnp.argmax(hit_bv, 1)[:, None], 1)[:, 0]
    return jnp.where(hit_bv.any(1), child_b, -1).astype(jnp.int32)


def item_of_leaf(catalog: Catalog, leaf_b: jax.Array) -> jax.Array:
    """int32 [B]: the item of each leaf (level-L node), -1 for -1 or out of range."""
    ok_b = (leaf_b >= 0) & (leaf_b < catalog.num_items)
    return jnp.where(ok_b, jnp.asarray(catalog.leaf_item)[jnp.where(ok_b, leaf_b, 0)], -1)


def item_of_sid(catalog: Catalog, codes_bl: jax.Array) -> jax.Array:
    """int32 [B]: the item whose SID is each row of `codes_bl` [B, L], -1 if none."""
    if codes_bl.shape[1] != catalog.num_levels:
        raise ValueError(f"SIDs have {codes_bl.shape[1]} levels, the catalog {catalog.num_levels}")
    node_b = jnp.zeros(codes_bl.shape[0], jnp.int32)
    for level in range(catalog.num_levels):
        node_b = next_node(catalog, level, node_b, codes_bl[:, level])
    return item_of_leaf(catalog, node_b)
