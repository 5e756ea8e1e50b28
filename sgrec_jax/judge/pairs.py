"""Preference pairs a_i > a_j for the judge's stage 2, from logs or from LLM pairwise labels.

A log pair is a training request (history -> logged next item) with a_i = the logged next item
and a_j = a negative the user did not choose (never an item of the user's whole sequence):

  "random"   uniform over the catalog;
  "nearest"  uniform over the `num_neighbours` items nearest the target by embedding cosine
             (hard: they read like the target), falling back to "random" when all of them are
             in the user's sequence;
  "popular"  proportional to the item's training-sequence popularity (hard: what a
             popularity recommender would have shown).

Pairs are split into train / held-out by user, so no held-out user's context is trained on.
Evidence for both items comes from any jittable aspect function (the feature backend) or from an
evidence store's lookup (LLM stage-1 evidence, NaN where the store lacks the pair).

A store also gives pairs of its own (`store_pairs`): experiments/judge.py judges a sampled
training request's target and negatives, so each stored target beats each stored negative of its
user, in the context of the target's request (`store_requests` recovers the requests).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np

from sgrec_jax.core.files import read_npz
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import PAD_ITEM, Examples, training_sequences
from sgrec_jax.judge.aspects import NUM_ASPECTS
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import RewardRequests

NEGATIVES = ("random", "nearest", "popular")
# aspects_fn(requests, items_bg int32 [B, G]) -> float32 [B, G, A], jittable (the feature backend).
AspectsFn = Callable[[RewardRequests, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Pairs:
    """n preference pairs: in the context of request r, item_i[r] is preferred to item_j[r].

    Attributes:
      history: int32 [n, H] right-aligned history of the request, PAD_ITEM on the left.
      target: int32 [n] the request's logged next item (the feature backend's "future" aspect
        looks at the user's items after it); equals item_i for log pairs.
      user: int32 [n] internal user index.
      item_i: int32 [n] the preferred item.
      item_j: int32 [n] the other item.
    """

    history: np.ndarray
    target: np.ndarray
    user: np.ndarray
    item_i: np.ndarray
    item_j: np.ndarray

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def take(self, index: np.ndarray) -> Pairs:
        """The pairs at `index` (int indices or a bool mask over the n pairs)."""
        return Pairs(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))

    def requests(self) -> RewardRequests:
        """The pairs' requests, all judged, as the reward channels take them."""
        return RewardRequests.from_examples(Examples(self.history, self.target, self.user))

    @staticmethod
    def concat(parts: Sequence[Pairs]) -> Pairs:
        return Pairs(*(np.concatenate([getattr(p, f.name) for p in parts])
                       for f in dataclasses.fields(Pairs)))


def _sampler(
    rng: np.random.Generator, probs_n: np.ndarray | None, num_items: int
) -> Callable[[np.ndarray], int]:
    """draw(exclude) -> an item not in `exclude`, uniform or by probs_n (rejection sampling)."""
    cdf_n = None if probs_n is None else np.cumsum(probs_n)

    def draw(exclude: np.ndarray) -> int:
        if len(np.unique(exclude)) >= num_items:
            raise ValueError("a user's sequence covers the whole catalog: no negative exists")
        # Users touch a tiny fraction of the catalog, so rejection takes ~1 draw.
        while True:
            if cdf_n is None:
                item = int(rng.integers(num_items))
            else:
                item = min(int(np.searchsorted(cdf_n, rng.random() * cdf_n[-1], "right")),
                           num_items - 1)
            if item not in exclude:
                return item

    return draw


def nearest_neighbours(emb_nd: np.ndarray, items: np.ndarray, k: int,
                       chunk: int = 1024) -> np.ndarray:
    """int32 [len(items), k]: each item's k nearest other items by cosine, nearest first."""
    emb_nd = np.asarray(emb_nd, np.float32)
    unit_nd = emb_nd / np.maximum(np.linalg.norm(emb_nd, axis=1, keepdims=True), 1e-12)
    if not 1 <= k < len(emb_nd):
        raise ValueError(f"num_neighbours must be in [1, {len(emb_nd) - 1}], got {k}")
    out = np.empty((len(items), k), np.int32)
    for start in range(0, len(items), chunk):
        rows = items[start:start + chunk]
        sim_cn = unit_nd[rows] @ unit_nd.T
        sim_cn[np.arange(len(rows)), rows] = -np.inf  # never the item itself
        top = np.argpartition(-sim_cn, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim_cn, top, axis=1), axis=1, kind="stable")
        out[start:start + len(rows)] = np.take_along_axis(top, order, axis=1)
    return out


def log_pairs(
    dataset: SeqRecDataset,
    examples: Examples,
    *,
    negative: str,
    seed: int,
    emb_nd: np.ndarray | None = None,
    num_neighbours: int = 20,
) -> Pairs:
    """One pair per request of `examples` (e.g. leave_one_out's train split): target vs negative.

    `emb_nd` (item embeddings [N, D]) is needed for negative="nearest". Deterministic given seed.
    """
    if negative not in NEGATIVES:
        raise ValueError(f"unknown negative {negative!r}; valid: {', '.join(NEGATIVES)}")
    n_items = dataset.num_items
    rng = np.random.default_rng((seed, NEGATIVES.index(negative)))
    probs_n = None
    if negative == "popular":
        counts_n = np.bincount(np.concatenate(training_sequences(dataset)), minlength=n_items)
        probs_n = counts_n / counts_n.sum()
    neighbours = None
    if negative == "nearest":
        if emb_nd is None:
            raise ValueError('negative="nearest" needs item embeddings (emb_nd)')
        targets, inverse = np.unique(examples.target, return_inverse=True)
        neighbours = nearest_neighbours(emb_nd, targets, num_neighbours)[inverse]
    draw = _sampler(rng, probs_n, n_items)
    item_j = np.empty(len(examples), np.int32)
    for r, user in enumerate(examples.user):
        seen = dataset.sequences[user]
        if neighbours is not None:
            candidates = neighbours[r][~np.isin(neighbours[r], seen)]
            if len(candidates):
                item_j[r] = candidates[rng.integers(len(candidates))]
                continue
        item_j[r] = draw(seen)
    return Pairs(history=examples.history, target=examples.target, user=examples.user,
                 item_i=examples.target.copy(), item_j=item_j)


def held_out_users(num_users: int, fraction: float, seed: int) -> np.ndarray:
    """bool [U]: a seeded `fraction` of the users, whose pairs are held out."""
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(num_users)
    mask = np.zeros(num_users, bool)
    mask[order[: max(1, round(fraction * num_users))]] = True
    return mask


def split_by_user(pairs: Pairs, held_out_u: np.ndarray) -> tuple[Pairs, Pairs]:
    """(train, held-out) pairs by the user mask of `held_out_users`."""
    held = held_out_u[pairs.user]
    return pairs.take(~held), pairs.take(held)


def pair_evidence(
    pairs: Pairs, aspects_fn: AspectsFn, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """(evidence of item_i, evidence of item_j), float32 [n, A] each, from a jittable backend.

    The batches are padded to one shape so `aspects_fn` compiles once.
    """
    score = jax.jit(lambda req, items_bg: aspects_fn(req, items_bg))
    out_i, out_j = [], []
    for start in range(0, len(pairs), batch_size):
        index = np.arange(start, start + batch_size)
        valid = index < len(pairs)
        part = pairs.take(np.where(valid, index, start))
        items_bg = jnp.asarray(np.stack([part.item_i, part.item_j], axis=1))
        ev_bga = np.asarray(score(part.requests(), items_bg))[valid]
        out_i.append(ev_bga[:, 0])
        out_j.append(ev_bga[:, 1])
    empty = np.zeros((0, NUM_ASPECTS), np.float32)
    return (np.concatenate(out_i or [empty]).astype(np.float32),
            np.concatenate(out_j or [empty]).astype(np.float32))


class EvidenceLookup(Protocol):
    """The read side of an evidence store (judge.store.EvidenceStore)."""

    def lookup(self, users_n: np.ndarray, items_n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...


def store_evidence(pairs: Pairs, store: EvidenceLookup) -> tuple[np.ndarray, np.ndarray]:
    """(evidence of item_i, evidence of item_j) from a store; NaN rows where it lacks the pair."""

    def side(items_n: np.ndarray) -> np.ndarray:
        evidence_na, found_n = store.lookup(pairs.user, items_n)
        evidence_na = np.array(evidence_na, dtype=np.float32)
        evidence_na[~np.asarray(found_n, bool)] = np.nan
        return evidence_na

    return side(pairs.item_i), side(pairs.item_j)


def store_requests(store: EvidenceStore, dataset: SeqRecDataset, train: Examples) -> np.ndarray:
    """int64 [len(store)]: the row of `train` whose request each stored pair was judged in, -1
    where it cannot be told.

    experiments/judge.py judges sampled training requests' targets and negatives (items outside the
    user's sequence), each (user, item) pair in the context of the first sampled request that has
    it. The store keeps no history, so the request is recovered: a stored target's is the user's
    first training request with that target; a stored negative's is the user's first request
    whose target is stored (exact when a user has one sampled request, the usual case at small
    sample ratios). -1 for negatives of a user with no stored target and for the user's other
    items (e.g. a validation target).
    """
    first: dict[tuple[int, int], int] = {}
    for r, key in enumerate(zip(train.user.tolist(), train.target.tolist(), strict=True)):
        first.setdefault(key, r)
    request = np.full(len(store), -1, np.int64)
    earliest: dict[int, int] = {}  # user -> first training request whose target is stored
    pairs = list(zip(store.users_n.tolist(), store.items_n.tolist(), strict=True))
    for s, key in enumerate(pairs):
        r = first.get(key)
        if r is not None:
            request[s] = r
            earliest[key[0]] = min(earliest.get(key[0], r), r)
    for s, (user, item) in enumerate(pairs):
        if request[s] < 0 and user in earliest and item not in dataset.sequences[user]:
            request[s] = earliest[user]
    return request


def store_pairs(store: EvidenceStore, dataset: SeqRecDataset, train: Examples
                ) -> tuple[Pairs, np.ndarray, np.ndarray]:
    """The preference pairs a store covers, with their stored evidence (ev_i, ev_j [n, A]).

    Every stored target of a training request beats every stored negative of the same user (an
    item outside the user's sequence), in the context of the target's request.
    """
    request = store_requests(store, dataset, train)
    known = request >= 0
    is_target = known & (store.items_n == train.target[np.maximum(request, 0)])
    negatives_of: dict[int, list[int]] = {}
    for s in np.flatnonzero(known & ~is_target):
        negatives_of.setdefault(int(store.users_n[s]), []).append(int(s))
    side_i, side_j = [], []
    for s in np.flatnonzero(is_target):
        negatives = negatives_of.get(int(store.users_n[s]), [])
        side_i += [s] * len(negatives)
        side_j += negatives
    side_i, side_j = np.array(side_i, np.int64), np.array(side_j, np.int64)
    rows = request[side_i]
    pairs = Pairs(history=train.history[rows], target=train.target[rows],
                  user=store.users_n[side_i], item_i=store.items_n[side_i],
                  item_j=store.items_n[side_j])
    return pairs, store.evidence_na[side_i], store.evidence_na[side_j]


LABEL_FIELDS = ("user", "item_i", "item_j", "label")


def load_pairwise_labels(
    path: str | os.PathLike, num_users: int, num_items: int
) -> dict[str, np.ndarray]:
    """Validated LLM pairwise labels from an .npz with int arrays user, item_i, item_j and label.

    label[r] = 1 means item_i[r] is preferred, 0 means item_j[r] is. Returns the four arrays
    (int32, label as float32). Raises DataFormatError naming the file, field and first bad row.
    """
    try:
        arrays = read_npz(path)
    except (OSError, ValueError) as e:
        raise DataFormatError(path, f"cannot read pairwise labels: {e}") from None
    missing = [f for f in LABEL_FIELDS if f not in arrays]
    if missing:
        raise DataFormatError(path, f"missing field(s) {missing}; need {list(LABEL_FIELDS)}")
    n = None
    for field in LABEL_FIELDS:
        a = arrays[field]
        if a.ndim != 1:
            raise DataFormatError(path, f"field {field!r} must be 1-D, has shape {a.shape}")
        if n is not None and len(a) != n:
            raise DataFormatError(path, f"field {field!r} has {len(a)} rows, {LABEL_FIELDS[0]!r} "
                                        f"has {n}")
        n = len(a)
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.bool_)):
            raise DataFormatError(path, f"field {field!r} must be integer, has dtype {a.dtype}")
    for field, bound in (("user", num_users), ("item_i", num_items), ("item_j", num_items)):
        bad = np.flatnonzero((arrays[field] < 0) | (arrays[field] >= bound))
        if bad.size:
            raise DataFormatError(path, f"field {field!r} row {bad[0]}: {arrays[field][bad[0]]} "
                                        f"is outside [0, {bound})")
    bad = np.flatnonzero(~np.isin(arrays["label"], (0, 1)))
    if bad.size:
        raise DataFormatError(path, f"field 'label' row {bad[0]}: {arrays['label'][bad[0]]} is "
                                    "not 0 or 1")
    bad = np.flatnonzero(arrays["item_i"] == arrays["item_j"])
    if bad.size:
        raise DataFormatError(path, f"row {bad[0]}: item_i == item_j == {arrays['item_i'][bad[0]]}")
    return {
        "user": arrays["user"].astype(np.int32),
        "item_i": arrays["item_i"].astype(np.int32),
        "item_j": arrays["item_j"].astype(np.int32),
        "label": arrays["label"].astype(np.float32),
    }


def labelled_pairs(
    labels: dict[str, np.ndarray], dataset: SeqRecDataset, max_history: int = 20
) -> Pairs:
    """Pairs from pairwise labels, preferred item first, in the context of each user's latest
    training state: history = the training sequence (capped), target = the validation target.

    The labels carry no request, so this context is an assumption: it is the latest one a judge
    may see without the test target. The feature backend's "future" aspect is then missing.
    """
    preferred_i = labels["label"] == 1
    item_i = np.where(preferred_i, labels["item_i"], labels["item_j"]).astype(np.int32)
    item_j = np.where(preferred_i, labels["item_j"], labels["item_i"]).astype(np.int32)
    history = np.full((len(item_i), max_history), PAD_ITEM, np.int32)
    target = np.empty(len(item_i), np.int32)
    for r, user in enumerate(labels["user"]):
        seq = dataset.sequences[user]
        h = seq[:-2][-max_history:]
        history[r, max_history - len(h):] = h
        target[r] = seq[-2]
    return Pairs(history=history, target=target, user=labels["user"].astype(np.int32),
                 item_i=item_i, item_j=item_j)
