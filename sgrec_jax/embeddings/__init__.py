"""Item embeddings from text, co-occurrence, files or pretrained encoders, behind one interface.

sgrec_jax/registration.py registers every source in EMBEDDING_SOURCES; call `item_embeddings`.
"""

from sgrec_jax.embeddings.base import EMBEDDING_SOURCES, item_embeddings

__all__ = ["EMBEDDING_SOURCES", "item_embeddings"]
