"""The top-k decode as a serialized `jax.export` module: a recommender that needs no Python model.

    exported = export_decode(model, catalog, batch_size=128, beam_size=50, k=10,
                             platforms=["cpu", "tpu"])
    save_exported("decode.jax", exported)
    items_bk, scores_bk = load_exported("decode.jax").call(history_bh, history_mask_bh)

The module is `recommender.decode_fn` (constrained beam search) with the model's parameters, its
SID table and the catalog trie closed over as constants, so its only inputs are the requests:
history int32 [B, H] and history_mask bool [B, H], packed as `recommender.pack_histories` packs
them (H = the model's max_history); outputs items int32 [B, k] and scores float32 [B, k].
Why constants: one file is the whole recommender, with nothing to keep in sync (weights, SIDs
and trie always match); the price is a re-export (seconds) for new weights, and a file about
the size of the float32 parameters plus the trie (8.8 MB for the 4-layer d=128 model over
12,101 items, CPU and TPU together). Shapes are fixed at export: pad a partial batch to B.

Lowering needs no device of the target kind: `platforms=["tpu"]` lowers on a CPU-only machine.
With several platforms one module serves them all and picks its branch when called.
Serializing needs jax's optional dependency `flatbuffers`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from etils import epath
from flax import nnx

from sgrec_jax.core.files import atomic_write
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.serving.recommender import decode_fn
from sgrec_jax.sid.catalog import Catalog


def export_decode(
    model: SidGenerator,
    catalog: Catalog,
    *,
    batch_size: int,
    beam_size: int,
    k: int,
    platforms: Sequence[str] | None = None,
) -> jax.export.Exported:
    """Exports (history [B, H], mask [B, H]) -> (items [B, k], scores [B, k]) for B = batch_size.

    platforms: e.g. ["cpu", "tpu"]; None lowers for the default backend only.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    graphdef, state = nnx.split(model)
    decode = decode_fn(graphdef, beam_size=beam_size, k=k)
    # Fresh single-device copies: constants must not carry the shardings of the training mesh.
    state, catalog = jax.tree.map(jnp.asarray, jax.device_get((state, catalog)))

    def recommend(history_bh: jax.Array, history_mask_bh: jax.Array):
        return decode(state, catalog, history_bh, history_mask_bh)

    shape = (batch_size, model.max_history)
    return jax.export.export(jax.jit(recommend), platforms=platforms)(
        jax.ShapeDtypeStruct(shape, jnp.int32), jax.ShapeDtypeStruct(shape, jnp.bool_)
    )


def save_exported(path: str | os.PathLike, exported: jax.export.Exported) -> None:
    """Writes the serialized module atomically (never a truncated file)."""
    blob = exported.serialize()
    atomic_write(path, lambda f: f.write(blob))


def load_exported(path: str | os.PathLike) -> jax.export.Exported:
    """The module `save_exported` wrote; call it with `.call(history_bh, history_mask_bh)`."""
    blob = epath.Path(path).read_bytes()
    try:
        return jax.export.deserialize(bytearray(blob))
    except ImportError:  # jax's optional `flatbuffers` is missing: not the file's fault
        raise
    except Exception as e:  # flatbuffers and MLIR raise assorted types on a damaged blob
        raise DataFormatError(os.fspath(path), f"not a serialized jax.export module ({e})") from e
