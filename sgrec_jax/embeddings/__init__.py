"""Item embeddings from text, co-occurrence, files or pretrained encoders, behind one interface.

Importing the package registers every source in EMBEDDING_SOURCES; call `item_embeddings`.
"""

from sgrec_jax.embeddings import collaborative, precomputed, sentence_encoder, text
from sgrec_jax.embeddings.base import (
    EMBEDDING_SOURCES,
    default_options,
    item_embeddings,
)

__all__ = [
    "EMBEDDING_SOURCES",
    "collaborative",
    "default_options",
    "item_embeddings",
    "precomputed",
    "sentence_encoder",
    "text",
]
