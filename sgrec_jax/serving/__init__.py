"""Serving a trained generator: top-k recommendations from histories, and the exported decode."""

from sgrec_jax.serving.export import export_decode, load_exported, save_exported
from sgrec_jax.serving.recommender import Recommender, decode_fn, pack_histories

__all__ = [
    "Recommender",
    "decode_fn",
    "export_decode",
    "load_exported",
    "pack_histories",
    "save_exported",
]
