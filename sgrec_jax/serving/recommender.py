"""Top-k recommendations from a trained SID generator: raw histories in, item indices out.

    recommender = Recommender.from_workdir("workdirs/beauty_sft")   # or Recommender(model, ...)
    items_bk, scores_bk = recommender.recommend([[3, 17, 42], [8]], k=10)

`recommend` turns ragged item histories into the model's input exactly as the training split
does (`data.split`: the last `max_history` items, right-aligned, PAD_ITEM on the left), checks
every item id before any JAX work, and ranks the whole catalog by constrained beam search.
Requests run in chunks of at most `max_batch_size` rows, each padded up to a power of two, so a
server sees at most log2(max_batch_size) + 1 compiled shapes per k instead of one per batch size.

The jitted function is pure: `decode_fn(graphdef, ...)` takes the model's state and the catalog
as arguments, so one compile serves any weights of the same architecture (and `export` closes
the same function over fixed weights).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, read_npz
from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.decoding.beam_search import constrained_beam_search
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.models.registry import build_model
from sgrec_jax.sid.build import CODES_FILE
from sgrec_jax.sid.catalog import Catalog, build_catalog
from sgrec_jax.stages.pipeline import CONFIG_FILE
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.train_state import create_train_state, make_optimizer

# (state, catalog, history_bh int32, history_mask_bh bool) -> (items_bk int32, scores_bk float32)
DecodeFn = Callable[[nnx.State, Catalog, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]
Histories = Sequence[Sequence[int]] | np.ndarray


def decode_fn(graphdef: nnx.GraphDef, *, beam_size: int, k: int) -> DecodeFn:
    """The pure top-k decode of the model `graphdef` describes (jit or export it).

    Returns (items_bk, scores_bk): the k best items per request, best first, and their log-prob
    under the constrained policy; -1 / -inf where the catalog has fewer than k items.
    """
    if not 1 <= k <= beam_size:
        raise ValueError(f"need 1 <= k <= beam_size, got k={k}, beam_size={beam_size}")

    def decode(
        state: nnx.State, catalog: Catalog, history_bh: jax.Array, history_mask_bh: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        model = nnx.merge(graphdef, state)
        result = constrained_beam_search(
            model, catalog, history_bh, history_mask_bh, beam_size=beam_size, num_return=k
        )
        return result.items_bk, result.logprob_bk

    return decode


def pack_histories(
    histories: Histories, *, max_history: int, num_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """(history_bh int32 [B, max_history], history_mask_bh bool) as `data.split` packs them.

    Args:
      histories: per request its items, oldest first: a sequence of int sequences (real items
        only; an empty one is a user with no history), or an int array [B, H] right-aligned with
        PAD_ITEM on the left (as `split.Examples.history`).
      max_history: keep only the newest this many items of each history.
      num_items: item ids must be in 0..num_items-1.

    Raises:
      ValueError naming the first offending row: a non-integer or out-of-range item id, or (for
      arrays) PAD_ITEM after a real item.
    """
    if isinstance(histories, (list, tuple)):
        rows = []
        for r, row in enumerate(histories):
            row = np.asarray(row)
            if row.ndim != 1 or (row.size and not np.issubdtype(row.dtype, np.integer)):
                raise ValueError(
                    f"history row {r}: expected a flat list of integer item ids, got {row!r}"
                )
            bad = (row < 0) | (row >= num_items)
            if bad.any():
                raise _range_error(r, row[bad][0], num_items)
            rows.append(row[-max_history:])
        history_bh = np.full((len(rows), max_history), PAD_ITEM, np.int64)
        for r, row in enumerate(rows):
            history_bh[r, max_history - len(row):] = row
        return history_bh.astype(np.int32), history_bh != PAD_ITEM

    history_bh = np.asarray(histories)
    if history_bh.ndim != 2 or not np.issubdtype(history_bh.dtype, np.integer):
        raise ValueError(
            f"array histories must be integer [B, H], got {history_bh.dtype} {history_bh.shape}"
        )
    mask_bh = history_bh != PAD_ITEM
    # Right-aligned: once a row has a real item, every later slot is real too.
    gaps = np.flatnonzero((mask_bh[:, :-1] & ~mask_bh[:, 1:]).any(1))
    if gaps.size:
        raise ValueError(
            f"history row {gaps[0]}: PAD_ITEM ({PAD_ITEM}) after a real item; array "
            "histories must be right-aligned with the padding on the left"
        )
    bad = mask_bh & ((history_bh < 0) | (history_bh >= num_items))
    if bad.any():
        r, h = np.argwhere(bad)[0]
        raise _range_error(r, history_bh[r, h], num_items)
    cut = history_bh.shape[1] - max_history
    if cut >= 0:
        return history_bh[:, cut:].astype(np.int32), mask_bh[:, cut:]
    pad = ((0, 0), (-cut, 0))
    return (
        np.pad(history_bh, pad, constant_values=PAD_ITEM).astype(np.int32),
        np.pad(mask_bh, pad, constant_values=False),
    )


def _range_error(row: int, item: int, num_items: int) -> ValueError:
    return ValueError(f"history row {row}: item id {item} is outside 0..{num_items - 1}")


def _bucket(rows: int, max_batch_size: int) -> int:
    return min(max_batch_size, 1 << max(rows - 1, 0).bit_length())


class Recommender:
    """Ranks the catalog for item histories with a SID generator and constrained beam search.

    Attributes:
      model, catalog: what it decodes with (e.g. to `export.export_decode` a loaded one).
      beam_size, max_batch_size, max_history, num_items: its fixed settings.
    """

    def __init__(
        self,
        model: SidGenerator,
        catalog: Catalog,
        *,
        beam_size: int,
        max_batch_size: int = 256,
    ):
        """
        Args:
          model: the generator; its SID table must be the one the catalog was built from.
          catalog: the trie of the model's SIDs (moved to the device here, once).
          beam_size: beams per level; `recommend` returns k <= beam_size items.
          max_batch_size: the most requests decoded in one call.
        """
        if beam_size < 1 or max_batch_size < 1:
            raise ValueError(
                f"beam_size and max_batch_size must be >= 1, got {beam_size}, {max_batch_size}"
            )
        num_items = model.codes[...].shape[0]
        if catalog.num_items != num_items or catalog.vocab_sizes != model.level_sizes:
            raise ValueError(
                f"the catalog ({catalog.num_items} items, level sizes {catalog.vocab_sizes}) "
                f"does not match the model ({num_items} items, level sizes {model.level_sizes})"
            )
        self.beam_size = beam_size
        self.max_batch_size = max_batch_size
        self.max_history = model.max_history
        self.num_items = num_items
        self.model = model
        self.catalog = jax.device_put(catalog)
        self._graphdef, self._state = nnx.split(model)
        self._decoders: dict[int, Callable] = {}

    def recommend(self, histories: Histories, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(items int32 [B, k], scores float32 [B, k]) for B histories, best first.

        `histories` as `pack_histories` takes them. Scores are the items' log-probs under the
        constrained policy. Where the catalog has fewer than k items the tail is -1 / -inf.
        """
        if not 1 <= k <= self.beam_size:
            raise ValueError(f"k must be in 1..beam_size={self.beam_size}, got {k}")
        history_bh, mask_bh = pack_histories(
            histories, max_history=self.max_history, num_items=self.num_items
        )
        decode = self._decoders.get(k)
        if decode is None:
            decode = jax.jit(decode_fn(self._graphdef, beam_size=self.beam_size, k=k))
            self._decoders[k] = decode
        items, scores = [], []
        for start in range(0, len(history_bh), self.max_batch_size):
            chunk_bh = history_bh[start : start + self.max_batch_size]
            rows = len(chunk_bh)
            # Padded rows are empty histories; their results are dropped.
            pad = ((0, _bucket(rows, self.max_batch_size) - rows), (0, 0))
            out = decode(
                self._state, self.catalog,
                np.pad(chunk_bh, pad, constant_values=PAD_ITEM),
                np.pad(mask_bh[start : start + self.max_batch_size], pad),
            )
            items_bk, scores_bk = jax.device_get(out)
            items.append(items_bk[:rows])
            scores.append(scores_bk[:rows])
        if not items:
            return np.zeros((0, k), np.int32), np.zeros((0, k), np.float32)
        return np.concatenate(items), np.concatenate(scores)

    @classmethod
    def from_workdir(
        cls,
        workdir: str | os.PathLike,
        *,
        beam_size: int | None = None,
        step: int | None = None,
        max_batch_size: int = 256,
    ) -> Recommender:
        """The SFT generator of an `experiments.train` work directory, at its best checkpoint.

        Reads DIR/config.json, DIR/sids.npz and DIR/sft/checkpoints: the best step by validation
        that the latest checkpoint records, or `step`. beam_size defaults to the config's
        eval.beam_size. The train state is rebuilt as the SFT stage builds it (model, optimizer,
        mesh), because a checkpoint restores onto a whole TrainState. Opening the checkpoints
        removes unfinished saves (as resuming does), so do not load from a directory a live run
        is writing to.
        """
        workdir = as_path(workdir)
        config = _read_config(workdir / CONFIG_FILE)
        codes_path = workdir / CODES_FILE
        codes_nl, level_sizes = _read_sids(codes_path)
        checkpoints = workdir / "sft" / "checkpoints"
        if not checkpoints.is_dir():
            raise FileNotFoundError(f"no SFT checkpoints in {checkpoints}")
        model = nnx.jit(  # one compile of the initialisers instead of one per parameter shape
            lambda: build_model(
                config.model.name, codes_nl=codes_nl, level_sizes=level_sizes,
                max_history=config.data.max_history, rngs=nnx.Rngs(config.seed),
                **dict(config.model.options),
            )
        )()
        sft = config.sft
        optimizer = make_optimizer(
            sft.learning_rate, sft.warmup_steps, sft.num_steps,
            weight_decay=sft.weight_decay, clip_norm=sft.clip_norm,
        )
        mesh = make_mesh(data=config.mesh.data, fsdp=config.mesh.fsdp)
        graphdef, state, _ = create_train_state(model, optimizer, jax.random.key(config.seed), mesh)
        with Checkpointer(checkpoints, keep=sft.keep_checkpoints) as checkpointer:
            latest, metadata = checkpointer.restore_or_init(state)
            if metadata is None:
                raise FileNotFoundError(f"no SFT checkpoints in {checkpoints}")
            if step is None:
                # The training loop's own record; Orbax's best-by-metric breaks ties otherwise.
                step = metadata["progress"]["best_step"]
                if not step:
                    raise FileNotFoundError(f"no evaluated SFT checkpoint in {checkpoints} yet")
            state = latest if step == int(latest.step) else checkpointer.restore(step, state)
        model = nnx.merge(graphdef, state.params, state.model_state)
        if not np.array_equal(np.asarray(model.codes[...]), codes_nl):
            raise DataFormatError(
                codes_path, f"the SIDs differ from the ones checkpoint {step} was trained with"
            )
        return cls(
            model, build_catalog(codes_nl, level_sizes),
            beam_size=config.eval.beam_size if beam_size is None else beam_size,
            max_batch_size=max_batch_size,
        )


def _read_config(path: epath.Path) -> ConfigDict:
    try:
        return ConfigDict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise DataFormatError(path, f"unreadable run config ({e})") from e


def _read_sids(path: epath.Path) -> tuple[np.ndarray, tuple[int, ...]]:
    """The SID table and level sizes the sids stage cached (see `sid.build`)."""
    try:
        f = read_npz(path)
        return f["codes_nl"], tuple(int(v) for v in f["level_sizes"])
    except (OSError, ValueError, KeyError) as e:
        raise DataFormatError(path, f"unreadable SID cache ({e})") from e
