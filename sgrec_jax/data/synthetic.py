"""A seeded recommendation world with known ground truth (the project's embedded default).

Real logs have no true CTR, no true relevance and no true user interest, so reward-mixing schemes
can only be compared against a known Pareto front on a world like this one. The generative model
(all vectors unit-norm in R^D, D = `latent_dim`):

Topics. `branching` (default 4 x 4 x 3) is a topic tree with T = prod(branching) leaf topics.
Top categories are orthonormal vectors; a child node is exactly `child_cos` cosine-similar to its
parent (parent plus a random orthogonal direction). Leaves are the topics t_k.

Items. Item i gets a leaf topic k_i (every topic gets N/T items, rounded), a semantic vector s_i
with cos(s_i, t_{k_i}) = `item_topic_cos`, a brand of its topic, and text built from its path in
the tree (see synthetic_text.py): titles, category paths and brands all carry the topic.

Users. Topic popularity w_k is Zipf (exponent `topic_zipf`, random ranks). User u has topic
preferences pi_u ~ Dirichlet(user_topic_alpha * T * w), sparse and biased to popular topics. At
each step an "impulse" e_t = a vector `interest_topic_cos`-similar to a topic drawn from pi_u,
and the interest follows x_0 = e_0, x_t = normalize(sqrt(1 - drift) x_{t-1} + sqrt(drift) e_t):
drift = 0 keeps x fixed, drift = 1 redraws it each step.

Logs. At step t user u picks the item at position t from a softmax over the catalog minus the
items already chosen: logit_i = choice_temperature * <x_t, s_i> + log_pop_i with log_pop_i ~
N(0, popularity_sigma^2). Lengths are min_seq_len + Geometric (mean `mean_seq_len`), capped.

Business side, where `conflict` c in [0, 1] enters (and nothing else depends on it):
  bait_i      = standardised -log w_{k_i}: how niche the item's topic is, i.e. how far it is
                from most users' interests.
  bid_i       = exp(bid_mu + bid_sigma * z_i + c * bait_bid * bait_i)
  quality_i   = quality_sigma * eta_i + c * bait_quality * bait_i
  M           = (1 - 2c) I + click_taste * A,  A_jk ~ N(0, 1/D) fixed
  true_ctr    = sigmoid(ctr_scale * x^T M s_i + quality_i + ctr_bias)
  relevance   = (1 + cos(x, s_i)) / 2
  business    = bid_i * true_ctr
with z_i, eta_i ~ N(0, 1) and relevance in [0, 1]. At c = 0 clicks follow the user's interest and
bids ignore it, so business value and relevance agree (positive rank correlation over (user, item)
pairs). As c grows the interest term of the CTR shrinks, vanishes at c = 0.5 and turns negative
(clicks go to items off the user's interest, clickbait-like), while bids and quality move onto niche
items most users do not care about, so the rank correlation falls monotonically and is strongly
negative at c = 1 (default world, Spearman over users' first interests x all items: +0.55 at c = 0,
-0.06 at 0.5, -0.46 at 1). Each part of the world draws from its own seeded stream, so worlds that
differ only in `conflict` share topics, items, text, users and logs: only bids, quality and the
click matrix change.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from sgrec_jax.core.registry import field_defaults
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.data.synthetic_text import item_texts, make_vocabulary

BID_SOURCE = "synthetic world bids (ground truth)"
_STREAMS = ("topics", "items", "text", "users", "logs", "business")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Every knob of the synthetic world; the defaults make the quickstart world (~1 s)."""

    num_items: int = 2000
    num_users: int = 1000
    # Topic tree and vectors.
    branching: tuple[int, ...] = (4, 4, 3)
    latent_dim: int = 32
    child_cos: float = 0.75
    item_topic_cos: float = 0.85
    interest_topic_cos: float = 0.85
    # Text.
    words_per_node: int = 4
    brands_per_topic: int = 3
    num_modifiers: int = 40
    title_noise: float = 0.1
    # Users and logs.
    topic_zipf: float = 1.0
    user_topic_alpha: float = 0.05
    drift: float = 0.1
    choice_temperature: float = 8.0
    popularity_sigma: float = 1.0
    min_seq_len: int = 5
    mean_seq_len: float = 10.0
    max_seq_len: int = 50
    # Business side.
    conflict: float = 0.0
    bid_mu: float = 0.0
    bid_sigma: float = 0.5
    bait_bid: float = 0.5
    bait_quality: float = 0.5
    quality_sigma: float = 0.5
    click_taste: float = 1.0
    ctr_scale: float = 3.0
    ctr_bias: float = -3.0
    seed: int = 0
    # 0 simulates all users at once. N > 0 simulates them N at a time, each block from its own
    # seeded streams: the same distribution (a different draw), with memory bounded by N rather
    # than num_users, so worlds of tens of millions of interactions fit on one host.
    user_block_size: int = 0

    def __post_init__(self):
        object.__setattr__(self, "branching", tuple(self.branching))  # Configs may give lists.
        for name, least in (("words_per_node", 2), ("brands_per_topic", 1), ("num_modifiers", 2)):
            if getattr(self, name) < least:
                raise ValueError(f"{name} must be >= {least}, got {getattr(self, name)}")
        for name in ("drift", "conflict", "title_noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("child_cos", "item_topic_cos", "interest_topic_cos"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.branching or min(self.branching) < 1:
            raise ValueError(f"branching must be non-empty positive ints, got {self.branching}")
        if self.latent_dim < self.branching[0]:
            raise ValueError(f"latent_dim {self.latent_dim} < {self.branching[0]} top categories")
        if self.num_items < self.num_topics:
            raise ValueError(f"num_items {self.num_items} < num_topics {self.num_topics}")
        if self.num_users < 1:
            raise ValueError(f"num_users must be >= 1, got {self.num_users}")
        if self.user_block_size < 0:
            raise ValueError(f"user_block_size must be >= 0, got {self.user_block_size}")
        if not 5 <= self.min_seq_len <= self.mean_seq_len <= self.max_seq_len <= self.num_items:
            raise ValueError(
                "need 5 <= min_seq_len <= mean_seq_len <= max_seq_len <= num_items, got "
                f"{self.min_seq_len}, {self.mean_seq_len}, {self.max_seq_len}, {self.num_items}"
            )

    @property
    def num_topics(self) -> int:
        return math.prod(self.branching)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _around(rng: np.random.Generator, centers_nd: np.ndarray, cos: float) -> np.ndarray:
    """Unit vectors at exactly cosine `cos` to each (unit) center, in a random direction."""
    g = rng.standard_normal(centers_nd.shape)
    g -= np.sum(g * centers_nd, axis=-1, keepdims=True) * centers_nd
    return cos * centers_nd + math.sqrt(1.0 - cos * cos) * _unit(g)


@dataclasses.dataclass(frozen=True)
class SyntheticWorld:
    """A generated world: the dataset plus the ground truth behind it.

    Vectors are float32 and unit-norm. Items are internal indices 0..N-1 of `dataset`. The
    batched functions take user vectors [B, D] and item indices [B, G] and return [B, G].

    Attributes:
      topic_vectors: [T, D] leaf topic vectors t_k.
      item_topic: [N] leaf topic of each item.
      item_path: [N, L] the item's node at each level of the tree (level-local numbering).
      item_vectors: [N, D] semantic vectors s_i.
      item_brand: [N] brand index (brands of topic k: k * brands_per_topic + 0..).
      item_bait: [N] standardised niche score the conflict knob acts through.
      item_quality: [N] additive CTR logit term.
      bids: [N] the advertiser bids (also `dataset.items.bids`).
      click_matrix: [D, D] the bilinear CTR matrix M.
      user_topic_prefs: [U, T] pi_u.
    """

    config: WorldConfig
    dataset: SeqRecDataset
    topic_vectors: np.ndarray
    item_topic: np.ndarray
    item_path: np.ndarray
    item_vectors: np.ndarray
    item_brand: np.ndarray
    item_bait: np.ndarray
    item_quality: np.ndarray
    bids: np.ndarray
    click_matrix: np.ndarray
    user_topic_prefs: np.ndarray
    # Interest x_t of every interaction, users concatenated in order: rows offsets[u]..[u+1].
    interests: np.ndarray = dataclasses.field(repr=False)
    offsets: np.ndarray = dataclasses.field(repr=False)

    def user_interest_at(self, user: int, step: int) -> np.ndarray:
        """[D] the interest x_t with which `user` chose the item at position `step`."""
        return self.interests_at(np.array([user]), np.array([step]))[0]

    def interests_at(self, users_b: np.ndarray, steps_b: np.ndarray) -> np.ndarray:
        """[B, D] interests of (user, position) pairs."""
        users_b, steps_b = np.asarray(users_b), np.asarray(steps_b)
        if np.any((users_b < 0) | (users_b >= self.dataset.num_users)):
            raise IndexError(f"user outside 0..{self.dataset.num_users - 1}")
        lengths = self.offsets[users_b + 1] - self.offsets[users_b]
        if np.any((steps_b < 0) | (steps_b >= lengths)):
            raise IndexError("step outside the user's sequence")
        return self.interests[self.offsets[users_b] + steps_b]

    def interests_for_targets(self, users_b: np.ndarray, targets_b: np.ndarray) -> np.ndarray:
        """[B, D] the interest when each user chose each target item (as in split.Examples).

        Sequences never repeat an item, so (user, item) identifies the position.
        """
        users_b, targets_b = np.asarray(users_b), np.asarray(targets_b)
        steps = np.empty(users_b.shape, dtype=np.int64)
        for b, (u, item) in enumerate(zip(users_b.tolist(), targets_b.tolist(), strict=True)):
            where = np.flatnonzero(self.dataset.sequences[u] == item)
            if where.size == 0:
                raise KeyError(f"user {u} never chose item {item}")
            steps[b] = where[0]
        return self.interests_at(users_b, steps)

    def _items(self, user_vec_bd: np.ndarray, items_bg: np.ndarray) -> np.ndarray:
        if user_vec_bd.ndim != 2 or items_bg.ndim != 2 or len(user_vec_bd) != len(items_bg):
            raise ValueError(
                f"expected users [B, D] and items [B, G], got {user_vec_bd.shape}, "
                f"{items_bg.shape}"
            )
        return self.item_vectors[items_bg]

    def true_ctr(self, user_vec_bd: np.ndarray, items_bg: np.ndarray) -> np.ndarray:
        """[B, G] click probability in (0, 1): sigmoid(ctr_scale x^T M s + quality + bias).

        `user_vec_bd` are interests as `interests_at` gives them (unit norm): the scale matters.
        """
        s_bgd = self._items(user_vec_bd, items_bg)
        affinity = np.einsum("bd,bgd->bg", user_vec_bd @ self.click_matrix, s_bgd)
        logit = self.config.ctr_scale * affinity + self.item_quality[items_bg]
        return 1.0 / (1.0 + np.exp(-(logit + self.config.ctr_bias)))

    def semantic_relevance(self, user_vec_bd: np.ndarray, items_bg: np.ndarray) -> np.ndarray:
        """[B, G] topic match in [0, 1]: (1 + cos(user interest, item vector)) / 2."""
        s_bgd = self._items(user_vec_bd, items_bg)
        cos = np.einsum("bd,bgd->bg", _unit(user_vec_bd), s_bgd)
        return np.clip((1.0 + cos) / 2.0, 0.0, 1.0)

    def business_value(self, user_vec_bd: np.ndarray, items_bg: np.ndarray) -> np.ndarray:
        """[B, G] expected revenue bid x true CTR."""
        return self.bids[items_bg] * self.true_ctr(user_vec_bd, items_bg)


def _topic_tree(rng: np.random.Generator, config: WorldConfig) -> np.ndarray:
    """[T, D] leaf topic vectors, children `child_cos` from their parents."""
    q, _ = np.linalg.qr(rng.standard_normal((config.latent_dim, config.branching[0])))
    nodes = q.T
    for fanout in config.branching[1:]:
        nodes = _around(rng, np.repeat(nodes, fanout, axis=0), config.child_cos)
    return nodes


def _simulate_users(
    rng_users: np.random.Generator,
    rng_logs: np.random.Generator,
    config: WorldConfig,
    topic_vectors: np.ndarray,
    topic_weights: np.ndarray,
    item_vectors: np.ndarray,
    log_pop: np.ndarray,
    u_count: int,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Simulates `u_count` users: (prefs [U, T], per-user item sequences, per-user interests
    [n_u, D]). `log_pop` [N] is the items' popularity term, shared by every block of users."""
    t_count = config.num_topics
    prefs = rng_users.dirichlet(config.user_topic_alpha * t_count * topic_weights, size=u_count)
    p = 1.0 / (config.mean_seq_len - config.min_seq_len + 1.0)
    lengths = config.min_seq_len + rng_users.geometric(p, size=u_count) - 1
    lengths = np.minimum(lengths, config.max_seq_len)
    max_len = int(lengths.max())
    # Impulse topics by inverse-CDF sampling from each user's preferences, one per step.
    cdf = np.cumsum(prefs, axis=1)
    draws = rng_users.random((max_len, u_count, 1)) * cdf[:, -1:]
    impulse_topics = (cdf[None] < draws).sum(-1)  # [max_len, U]
    impulses = _around(rng_users, topic_vectors[impulse_topics], config.interest_topic_cos)

    # The softmax over the catalog is the hot loop; float32 halves its cost.
    scaled_items_dn = (config.choice_temperature * item_vectors.T).astype(np.float32)
    log_pop = log_pop.astype(np.float32)
    sequences = np.zeros((u_count, max_len), dtype=np.int32)
    interests = np.zeros((u_count, max_len, config.latent_dim))
    x = impulses[0]
    for t in range(max_len):
        if t > 0:
            x = _unit(math.sqrt(1 - config.drift) * x + math.sqrt(config.drift) * impulses[t])
        interests[:, t] = x
        active = np.flatnonzero(lengths > t)
        logits = x[active].astype(np.float32) @ scaled_items_dn + log_pop
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights[np.arange(len(active))[:, None], sequences[active, :t]] = 0.0
        cum = np.cumsum(weights, axis=1)
        # r in (0, total] so the first item with cum >= r has positive weight: no repeats.
        r = (1.0 - rng_logs.random((len(active), 1))) * cum[:, -1:]
        pick = np.argmax(cum >= r, axis=1)
        sequences[active, t] = pick
    seqs = [sequences[u, : lengths[u]].copy() for u in range(u_count)]
    user_interests = [interests[u, : lengths[u]] for u in range(u_count)]
    return prefs, seqs, user_interests


def _user_blocks(config: WorldConfig, rng_users: np.random.Generator,
                 rng_logs: np.random.Generator):
    """(users stream, logs stream, user count) per block of users, generated lazily.

    One block of all users on the world's own streams when user_block_size is 0; otherwise
    blocks of user_block_size users, block k on streams spawned from (seed, k).
    """
    if not config.user_block_size:
        yield rng_users, rng_logs, config.num_users
        return
    for k, start in enumerate(range(0, config.num_users, config.user_block_size)):
        users, logs = np.random.SeedSequence([config.seed, k]).spawn(2)
        count = min(config.user_block_size, config.num_users - start)
        yield np.random.default_rng(users), np.random.default_rng(logs), count


def generate_world(config: WorldConfig) -> SyntheticWorld:
    """Builds the world `config` describes; same config, same world, bit for bit."""
    rngs = dict(zip(_STREAMS, map(np.random.default_rng,
                                  np.random.SeedSequence(config.seed).spawn(len(_STREAMS))),
                    strict=True))
    n, t_count, d = config.num_items, config.num_topics, config.latent_dim
    topic_vectors = _topic_tree(rngs["topics"], config)
    ranks = rngs["topics"].permutation(t_count)
    topic_weights = (ranks + 1.0) ** -config.topic_zipf
    topic_weights /= topic_weights.sum()

    rng = rngs["items"]
    item_topic = rng.permutation(np.arange(n) % t_count)
    item_vectors = _around(rng, topic_vectors[item_topic], config.item_topic_cos)
    item_brand = item_topic * config.brands_per_topic + rng.integers(
        0, config.brands_per_topic, size=n
    )
    below = [math.prod(config.branching[level + 1:]) for level in range(len(config.branching))]
    item_path = np.stack([item_topic // size for size in below], axis=1)

    vocab = make_vocabulary(rngs["text"], config.branching, config.words_per_node,
                            config.brands_per_topic, config.num_modifiers)
    text = item_texts(rngs["text"], vocab, item_path, item_brand, config.title_noise)
    text["description"] = ("",) * n
    # Attributes share one id space: brands first, then tree nodes level by level.
    level_offsets = len(vocab.brands) + np.cumsum([0] + [len(x) for x in vocab.node_names[:-1]])
    attributes = np.concatenate([item_brand[:, None], item_path + level_offsets], axis=1)

    # Drawn first from the logs stream, as before blocks existed: one-shot worlds are unchanged.
    log_pop = config.popularity_sigma * rngs["logs"].standard_normal(n)
    blocks = _user_blocks(config, rngs["users"], rngs["logs"])
    prefs_parts, sequences, user_interests = [], [], []
    for rng_users, rng_logs, count in blocks:
        prefs, seqs, interests = _simulate_users(rng_users, rng_logs, config, topic_vectors,
                                                 topic_weights, item_vectors, log_pop, count)
        prefs_parts.append(prefs)
        sequences += seqs
        # float32 copies, so a block's float64 simulation arrays are freed before the next.
        user_interests += [x.astype(np.float32) for x in interests]
        del interests
    prefs = np.concatenate(prefs_parts)

    rng = rngs["business"]
    niche = -np.log(topic_weights[item_topic])
    bait = (niche - niche.mean()) / max(niche.std(), 1e-12)
    c = config.conflict
    bids = np.exp(config.bid_mu + config.bid_sigma * rng.standard_normal(n)
                  + c * config.bait_bid * bait)
    quality = config.quality_sigma * rng.standard_normal(n) + c * config.bait_quality * bait
    taste = rng.standard_normal((d, d)) / math.sqrt(d)
    click_matrix = (1.0 - 2.0 * c) * np.eye(d) + config.click_taste * taste

    f32 = np.float32
    items = Items(
        ids=tuple(f"item{i}" for i in range(n)),
        text={field: text[field] for field in TEXT_FIELDS},
        attributes=tuple(tuple(int(a) for a in row) for row in attributes),
        bids=bids.astype(f32),
        bid_source=BID_SOURCE,
    )
    dataset = SeqRecDataset(
        name="synthetic",
        items=items,
        user_ids=tuple(f"user{u}" for u in range(config.num_users)),
        sequences=tuple(sequences),
    )
    lengths = np.array([len(s) for s in sequences])
    return SyntheticWorld(
        config=config,
        dataset=dataset,
        topic_vectors=topic_vectors.astype(f32),
        item_topic=item_topic.astype(np.int32),
        item_path=item_path.astype(np.int32),
        item_vectors=item_vectors.astype(f32),
        item_brand=item_brand.astype(np.int32),
        item_bait=bait.astype(f32),
        item_quality=quality.astype(f32),
        bids=items.bids,
        click_matrix=click_matrix.astype(f32),
        user_topic_prefs=prefs.astype(f32),
        interests=np.concatenate(user_interests).astype(f32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
    )


def world_options() -> dict:
    """The options of the "synthetic" dataset format (config.data.options) with their defaults:
    the fields of WorldConfig but its seed, which is data.bid_seed."""
    return {k: v for k, v in field_defaults(WorldConfig).items() if k != "seed"}


def load_synthetic(
    directory: str | os.PathLike | None,
    name: str | None = None,
    bid_seed: int = 0,
    min_seq_len: int = 3,
    **world_overrides,
) -> SeqRecDataset:
    """The dataset of the default world, as a `DATASET_FORMATS` loader.

    Nothing is read, so `directory` is ignored. The world seed is `bid_seed`; sequences are at
    least max(5, min_seq_len) long; `world_overrides` are WorldConfig fields.
    """
    del directory
    config = WorldConfig(
        **{"min_seq_len": max(WorldConfig.min_seq_len, min_seq_len), **world_overrides},
        seed=bid_seed,
    )
    dataset = generate_world(config).dataset
    return dataset if name is None else dataclasses.replace(dataset, name=name)
