"""The "sentence_encoder" source: a pretrained sentence-transformers model, offline only.

Optional: it works only when the `sentence-transformers` package is installed and the model is
already on this machine (a local directory, or a name in the Hugging Face cache). The hub is put
in offline mode (HF_HUB_OFFLINE=1) before loading, so nothing is ever downloaded; when the
package or the model is missing this fails with SentenceEncoderUnavailableError saying what to
install. The embedding width is the model's, so dim must equal it or be None.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from sgrec_jax.data.dataset import TEXT_FIELDS, SeqRecDataset
from sgrec_jax.embeddings.base import SourceOptions


class SentenceEncoderUnavailableError(RuntimeError):
    """The sentence-transformers package or the requested model is not available locally."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SentenceEncoderOptions(SourceOptions):
    """Options of the "sentence_encoder" source.

    Attributes:
      model: local directory of a sentence-transformers model, or a model name already in the
        local Hugging Face cache (required).
      batch_size: documents encoded per forward pass.
      fields: item text fields joined into each item's document (subset of TEXT_FIELDS).
      device: torch device ("cpu", "cuda", ...); None lets sentence-transformers choose.
    """

    model: str
    batch_size: int = 64
    fields: tuple[str, ...] = TEXT_FIELDS
    device: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        bad = sorted(set(self.fields) - set(TEXT_FIELDS))
        if bad or not self.fields:
            raise ValueError(
                f"fields must be a non-empty subset of {TEXT_FIELDS}, got {self.fields}"
            )


def _load_model(name: str, device: str | None):
    os.environ["HF_HUB_OFFLINE"] = "1"  # Never download: only locally present models are used.
    try:
        import sentence_transformers
    except ImportError as e:
        raise SentenceEncoderUnavailableError(
            "embedding source 'sentence_encoder' needs the sentence-transformers package, which is "
            "not installed: pip install sentence-transformers, and put the model in a local "
            "directory or the Hugging Face cache (it is loaded offline). The 'text' source needs "
            "neither."
        ) from e
    try:
        return sentence_transformers.SentenceTransformer(name, device=device)
    except (OSError, ValueError) as e:
        raise SentenceEncoderUnavailableError(
            f"sentence-transformers model {name!r} is not available locally ({e}); download it "
            "on a machine with network access (e.g. SentenceTransformer(name).save(dir)) and pass "
            "model=<that dir>"
        ) from e


def sentence_encoder_embeddings(
    dataset: SeqRecDataset,
    options: SentenceEncoderOptions,
    *,
    dim: int | None,
    seed: int,
    workdir: str | None,
) -> np.ndarray:
    """float [num_items, model width]: the model's encoding of each item document.

    Inference is deterministic, so seed is unused; so is workdir.
    """
    model = _load_model(options.model, options.device)
    width = model.get_sentence_embedding_dimension()
    if dim is not None and dim != width:
        raise ValueError(
            f"model {options.model!r} gives {width}-dim embeddings but dim={dim} was asked for; "
            "pass dim=None or the model's width"
        )
    documents = [dataset.items.document(i, options.fields) for i in range(dataset.num_items)]
    return model.encode(
        documents,
        batch_size=options.batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,  # item_embeddings normalises when asked.
        show_progress_bar=False,
    )
