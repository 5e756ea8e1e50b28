"""The reward-channel interface, its registry, and the reward tensor R[B, G, K].

A channel k scores G candidate items per request (algorithms.md section 2). Channels are built
once per experiment from a `RewardSetup` (config, dataset, work directory) by a builder
registered in REWARD_CHANNELS, then called inside jitted RL code:

    channels = build_channels(setup, ["ecpm", "emb_cosine"], config.rl.reward_options)
    rewards_bgk = jax.jit(reward_tensor)(channels, requests, items_bg, logprob_bg)

A RewardChannel is a pytree whose only leaves are its `tables` (device arrays the score needs),
so channels can be jit arguments instead of baked-in constants; `score_fn` is pure jnp. NaN
means "not judged": every channel returns NaN for padding candidates (items_bg == PAD_ITEM), and
a costly channel (the PSJ) may also return NaN for requests with judged_b False. Cheap channels
ignore judged_b.

Builders are registered in REWARD_CHANNELS with the defaults of their options (rewards/defaults.py,
judge/defaults.py): the options a config may override; unknown option names fail before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, atomic_write, read_npy
from sgrec_jax.core.registry import Registry
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.data.synthetic import SyntheticWorld, WorldConfig, generate_world
from sgrec_jax.embeddings import item_embeddings

KINDS = ("business", "semantic", "truth")
REWARDS_DIR = "rewards"  # Under the work directory: every cached reward artefact.
DEFAULT_TEXT_DIM = 64  # "text" embedding width when the config's SIDs are not built from text.
# Embedding sources of item text that semantic channels may read (RewardSetup.text_embeddings).
TEXT_SOURCES = ("text", "sentence_encoder")


@flax.struct.dataclass
class RewardRequests:
    """The requests a group of candidates answers, as device arrays.

    Attributes:
      history_bh: int32 [B, H] right-aligned history, PAD_ITEM on the left.
      history_mask_bh: bool [B, H] real history slots.
      target_b: int32 [B] the logged next item.
      user_b: int32 [B] internal user index.
      judged_b: bool [B] the sparse-judging mask (all True unless the RL loop sets it).
    """

    history_bh: jax.Array
    history_mask_bh: jax.Array
    target_b: jax.Array
    user_b: jax.Array
    judged_b: jax.Array

    @classmethod
    def from_examples(
        cls, examples: Examples, judged_b: np.ndarray | None = None
    ) -> RewardRequests:
        n = len(examples)
        judged = np.ones(n, dtype=bool) if judged_b is None else np.asarray(judged_b, dtype=bool)
        if judged.shape != (n,):
            raise ValueError(f"judged_b has shape {judged.shape}, expected ({n},)")
        return cls(
            history_bh=jnp.asarray(examples.history, jnp.int32),
            history_mask_bh=jnp.asarray(examples.history_mask),
            target_b=jnp.asarray(examples.target, jnp.int32),
            user_b=jnp.asarray(examples.user, jnp.int32),
            judged_b=jnp.asarray(judged),
        )

    @classmethod
    def from_batch(cls, batch: Mapping[str, Any], judged_b: Any = None) -> RewardRequests:
        """The requests of a data.pipeline batch (history, history_mask, target, user), every
        one judged unless `judged_b` is given; jittable (no conversion of the arrays)."""
        judged = jnp.ones(batch["target"].shape, bool) if judged_b is None else judged_b
        return cls(history_bh=batch["history"], history_mask_bh=batch["history_mask"],
                   target_b=batch["target"], user_b=batch["user"], judged_b=judged)


# score_fn(tables, requests, items_bg int32 [B, G], logprob_bg float32 [B, G]) -> float32 [B, G]
ScoreFn = Callable[[Any, RewardRequests, jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class RewardChannel:
    """One named reward: a pure score function plus the tables it reads.

    Attributes:
      name: the registry name (also the name in logs and stats).
      low, high: the declared range of finite rewards (popo_light maps rewards to [0, 1] by it).
      kind: one of KINDS ("business", "semantic", "truth").
      tables: pytree of arrays passed to score_fn (the pytree's only leaves).
      score_fn: pure, jittable; NaN for padding candidates and unjudged requests.
      reads_logprob: whether score_fn reads logprob_bg (the policy's item log-probs, e.g. to
        rank the group). The RL step computes them only for channels that say so; the others
        get NaN there (rl.grpo.needs_old_pass).
    """

    name: str
    low: float
    high: float
    kind: str
    tables: Any
    score_fn: ScoreFn
    reads_logprob: bool = False

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"channel {self.name!r}: kind must be one of {KINDS}, "
                             f"got {self.kind!r}")
        if not self.low < self.high:
            raise ValueError(f"channel {self.name!r}: need low < high, "
                             f"got {self.low}, {self.high}")

    def __call__(
        self, requests: RewardRequests, items_bg: jax.Array, logprob_bg: jax.Array
    ) -> jax.Array:
        """float32 [B, G] rewards of the candidates items_bg (PAD_ITEM -> NaN)."""
        return self.score_fn(self.tables, requests, items_bg, logprob_bg).astype(jnp.float32)


jax.tree_util.register_dataclass(
    RewardChannel, data_fields=["tables"],
    meta_fields=["name", "low", "high", "kind", "score_fn", "reads_logprob"],
)


def nan_where_padding(r_bg: jax.Array, items_bg: jax.Array) -> jax.Array:
    """float32 [B, G] r_bg with NaN (not judged) at padding candidates."""
    return jnp.where(items_bg == PAD_ITEM, jnp.nan, r_bg.astype(jnp.float32))


def safe_items(items_bg: jax.Array) -> jax.Array:
    """items_bg with padding replaced by item 0, for table lookups (mask the result after)."""
    return jnp.where(items_bg == PAD_ITEM, 0, items_bg)


@dataclasses.dataclass
class RewardSetup:
    """What channel builders read: the experiment and where to cache what they train.

    Attributes:
      config: the whole experiment config.
      dataset: the loaded dataset (internal item indices are what channels score).
      workdir: absolute work directory; artefacts go under workdir/rewards/.
      seed: base seed; each channel derives its own from it.
      artifacts: earlier stages' outputs by name (e.g. "sids"), shared with the pipeline.
    """

    config: ConfigDict
    dataset: SeqRecDataset
    workdir: epath.Path
    seed: int
    artifacts: dict[str, Any] = dataclasses.field(default_factory=dict)
    _world: SyntheticWorld | None = dataclasses.field(default=None, init=False, repr=False)
    _embeddings: dict[str, np.ndarray] = dataclasses.field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self):
        self.workdir = as_path(self.workdir)

    @property
    def rewards_dir(self) -> epath.Path:
        return self.workdir / REWARDS_DIR

    def world(self) -> SyntheticWorld | None:
        """The synthetic world behind the dataset (regenerated from config.data), else None.

        Mirrors `data.synthetic.load_synthetic`, and checks that the regenerated world has the
        dataset's sequences, so ground truth is never read from a different world.
        """
        data = self.config.data
        if data.format != "synthetic":
            return None
        if self._world is None:
            world_config = WorldConfig(
                **{"min_seq_len": max(WorldConfig.min_seq_len, data.min_seq_len),
                   **dict(data.options)},
                seed=data.bid_seed,
            )
            world = generate_world(world_config)
            same = len(world.dataset.sequences) == len(self.dataset.sequences) and all(
                np.array_equal(a, b)
                for a, b in zip(world.dataset.sequences, self.dataset.sequences, strict=True)
            )
            if not same:
                raise ValueError("the synthetic world regenerated from config.data does not "
                                 "match the dataset (config and data out of sync)")
            self._world = world
        return self._world

    def text_source(self) -> str:
        """The config's SID embedding source when it embeds item text (TEXT_SOURCES), else
        "text": the default source of text_embeddings."""
        sid_emb = self.config.sid.embeddings if "sid" in self.config else None
        return sid_emb.source if sid_emb is not None and sid_emb.source in TEXT_SOURCES else "text"

    def text_embeddings(self, dim: int | None = None, source: str | None = None,
                        **text_options: Any) -> np.ndarray:
        """float32 [N, D] unit-norm item text embeddings, cached on disk.

        source: an item-text embedding source (TEXT_SOURCES: "text" TF-IDF/LSA, or
        "sentence_encoder", a pretrained model); None = the config's SID embedding source when
        it is one of those (so rewards and SIDs see the same text space), else "text".
        dim and the options default to the config's SID embedding settings when `source` is the
        SIDs' source, else to DEFAULT_TEXT_DIM ("text") or the model's width
        ("sentence_encoder") and the source's defaults. Cached as
        workdir/rewards/text_emb_<key>.npy, key = hash of the settings.
        """
        sid_emb = self.config.sid.embeddings if "sid" in self.config else None
        source = self.text_source() if source is None else source
        if source not in TEXT_SOURCES:
            raise ValueError(f"text embedding source must be one of {TEXT_SOURCES}, got "
                             f"{source!r}")
        from_config = sid_emb is not None and sid_emb.source == source
        if dim is None:
            if from_config:
                dim = None if sid_emb.dim is None else int(sid_emb.dim)
            elif source == "text":
                dim = DEFAULT_TEXT_DIM
        if not text_options and from_config:
            text_options = dict(sid_emb.options)
        settings = {"dim": dim, "seed": self.seed, "options": dict(sorted(text_options.items())),
                    "dataset": self.dataset.name, "num_items": self.dataset.num_items}
        if source != "text":  # "text" keys stay those of caches written before sources existed.
            settings["source"] = source
        key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode())
        key = key.hexdigest()[:16]
        if key not in self._embeddings:
            path = self.rewards_dir / f"text_emb_{key}.npy"
            if path.exists():
                x_nd = read_npy(path)
            else:
                x_nd = item_embeddings(source, self.dataset, dim=dim, seed=self.seed,
                                       workdir=self.rewards_dir / "text_emb",
                                       **{**text_options, "normalize": True})
                self.rewards_dir.mkdir(parents=True, exist_ok=True)
                atomic_write(path, lambda f: np.save(f, x_nd))
            self._embeddings[key] = x_nd.astype(np.float32)
        return self._embeddings[key]


# build(setup, options) -> RewardChannel, options being the defaults updated by the config's.
ChannelBuilder = Callable[[RewardSetup, Mapping[str, Any]], RewardChannel]
# Filled by sgrec_jax/registration.py, each builder with its options' defaults.
REWARD_CHANNELS: Registry[ChannelBuilder] = Registry("reward channel")


def build_channels(
    setup: RewardSetup, names: Sequence[str], options: Mapping[str, Mapping[str, Any]]
) -> list[RewardChannel]:
    """The channels `names`, in order; options[name] overrides that channel's defaults.

    Every name and option is checked before any channel is built (building may train a model).
    Options of channels not in `names` are ignored, so a config may expose every channel's.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"reward channels listed twice: {list(names)}")
    options = {k: dict(v) for k, v in dict(options).items()}  # Also takes a ConfigDict.
    resolved = {name: REWARD_CHANNELS.resolve(name, options.get(name)) for name in names}
    channels = [REWARD_CHANNELS.get(name)(setup, opts) for name, opts in resolved.items()]
    for name, channel in zip(names, channels, strict=True):
        if channel.name != name:
            raise ValueError(f"builder of {name!r} returned channel {channel.name!r}")
    return channels


def reward_tensor(
    channels: Sequence[RewardChannel],
    requests: RewardRequests,
    items_bg: jax.Array,
    logprob_bg: jax.Array,
) -> jax.Array:
    """float32 [B, G, K]: channel k's rewards of the candidates in [..., k] (jittable)."""
    if not channels:
        raise ValueError("reward_tensor needs at least one channel")
    return jnp.stack([c(requests, items_bg, logprob_bg) for c in channels], axis=-1)
