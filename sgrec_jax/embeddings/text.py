"""The "text" source: SentencePiece tokens -> TF-IDF -> truncated SVD (latent semantic analysis).

A light, offline stand-in for a pretrained sentence encoder: a SentencePiece model is trained on
the catalogue's own item documents (so it needs no download and handles brand names and model
numbers), each item becomes a sublinear-tf, smooth-idf TF-IDF vector over its pieces, and a
seeded truncated SVD reduces that to `dim`. Items with no text get a small random row
(`base.fill_empty_rows`).
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import scipy.sparse
import sentencepiece as spm
from etils import epath

from sgrec_jax.data.dataset import TEXT_FIELDS, SeqRecDataset
from sgrec_jax.embeddings.base import (
    SourceOptions,
    fill_empty_rows,
    truncated_svd,
)

# Name of the SentencePiece model written to `workdir`, for later stages to reuse.
SPM_MODEL_FILE = "text_embeddings.spm.model"
_MODEL_TYPES = ("unigram", "bpe")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextOptions(SourceOptions):
    """Options of the "text" source.

    Attributes:
      vocab_size: SentencePiece vocabulary size; a soft limit, so a small corpus gets fewer.
      model_type: "unigram" or "bpe".
      fields: item text fields joined into each item's document (subset of TEXT_FIELDS).
      num_threads: SentencePiece trainer threads. The learned vocabulary depends on it, which is
        why it is an option with a fixed default and not taken from the machine.
    """

    vocab_size: int = 8000
    model_type: str = "unigram"
    fields: tuple[str, ...] = TEXT_FIELDS
    num_threads: int = 1

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(self.fields))
        if self.vocab_size < 8:
            raise ValueError(f"vocab_size must be >= 8, got {self.vocab_size}")
        if self.model_type not in _MODEL_TYPES:
            raise ValueError(f"model_type must be one of {_MODEL_TYPES}, got {self.model_type!r}")
        bad = sorted(set(self.fields) - set(TEXT_FIELDS))
        if bad or not self.fields:
            raise ValueError(
                f"fields must be a non-empty subset of {TEXT_FIELDS}, got {self.fields}"
            )
        if self.num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {self.num_threads}")


def train_sentencepiece(documents: list[str], options: TextOptions) -> bytes:
    """A serialized SentencePiece model trained in-process on the non-empty `documents`."""
    corpus = [d for d in documents if d.strip()]
    if not corpus:
        raise ValueError("no item has any text in the chosen fields; cannot train SentencePiece")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        vocab_size=options.vocab_size,
        model_type=options.model_type,
        hard_vocab_limit=False,
        character_coverage=0.9995,
        normalization_rule_name="nmt_nfkc_cf",  # Case-folds, so "Nail" and "nail" share pieces.
        max_sentence_length=1 << 16,  # Long descriptions would otherwise be dropped from training.
        bos_id=-1,
        eos_id=-1,
        num_threads=options.num_threads,
        minloglevel=2,
    )
    return model.getvalue()


def piece_counts(
    processor: spm.SentencePieceProcessor, documents: list[str]
) -> scipy.sparse.csr_array:
    """float64 [num_docs, vocab] piece counts; unknown pieces are left out."""
    ids = processor.encode(documents)
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    cols = np.fromiter((i for x in ids for i in x), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(ids)), lengths)
    known = cols != processor.unk_id()
    counts = scipy.sparse.coo_array(
        (np.ones(int(known.sum())), (rows[known], cols[known])),
        shape=(len(ids), processor.get_piece_size()),
    ).tocsr()
    counts.sum_duplicates()
    return counts


def tfidf(counts_nv: scipy.sparse.csr_array) -> scipy.sparse.csr_array:
    """Sublinear tf (1 + log tf), smooth idf (log((1 + n) / (1 + df)) + 1), rows L2-normalised."""
    n = counts_nv.shape[0]
    x = counts_nv.copy()
    x.data = 1.0 + np.log(x.data)
    df_v = np.bincount(x.indices, minlength=x.shape[1])
    idf_v = np.log((1.0 + n) / (1.0 + df_v)) + 1.0
    x.data *= idf_v[x.indices]
    norms_n = np.sqrt((x * x).sum(axis=1))
    norms_n[norms_n == 0] = 1.0  # Empty documents stay empty rows.
    return (scipy.sparse.diags_array(1.0 / norms_n) @ x).tocsr()


def text_embeddings(
    dataset: SeqRecDataset,
    options: TextOptions,
    *,
    dim: int | None,
    seed: int,
    workdir: str | None,
) -> np.ndarray:
    """float [num_items, dim]: LSA of the items' documents (see module docstring)."""
    assert dim is not None  # Guaranteed by item_embeddings (needs_dim).
    items = dataset.items
    documents = [items.document(i, options.fields) for i in range(dataset.num_items)]
    model = train_sentencepiece(documents, options)
    if workdir is not None:
        epath.Path(workdir).mkdir(parents=True, exist_ok=True)
        (epath.Path(workdir) / SPM_MODEL_FILE).write_bytes(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    x_nv = tfidf(piece_counts(processor, documents))
    u_nd, s_d = truncated_svd(x_nv, dim, seed)
    return fill_empty_rows(u_nd * s_d, np.diff(x_nv.indptr) == 0, seed)
