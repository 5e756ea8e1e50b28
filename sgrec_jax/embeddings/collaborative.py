"""The "collaborative" source: PPMI of item co-occurrence in training sequences -> truncated SVD.

Two items co-occur when they are at most `window` positions apart in a user's sequence. Only the
training part of each sequence is used (`data.split.training_sequences`: without the validation
and test targets), so embeddings built here never see held-out interactions. The item-item
positive PMI matrix (Levy & Goldberg style, with context-distribution smoothing) is factorised by
a seeded truncated SVD, rows = U * S**singular_value_power.

Items with no positive PMI with any other item (never seen in training, or only next to
themselves) get a deterministic small random row (`base.fill_empty_rows`): after normalisation
they point in random directions, roughly orthogonal to everything, instead of all collapsing
onto one vector.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import training_sequences
from sgrec_jax.embeddings.base import (
    SourceOptions,
    fill_empty_rows,
    truncated_svd,
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CollaborativeOptions(SourceOptions):
    """Options of the "collaborative" source.

    Attributes:
      window: items at most this many positions apart in a training sequence co-occur.
      context_smoothing: exponent on the context counts in PMI; 0.75 damps the bias towards
        rare items (Levy, Goldberg & Dagan 2015); 1.0 is plain PMI.
      singular_value_power: rows are U * S**p; 0.5 (the symmetric split) suits PPMI best per the
        same paper, 1.0 is classic LSA.
    """

    window: int = 5
    context_smoothing: float = 0.75
    singular_value_power: float = 0.5

    def __post_init__(self):
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if not 0 < self.context_smoothing <= 1:
            raise ValueError(f"context_smoothing must be in (0, 1], got {self.context_smoothing}")
        if self.singular_value_power < 0:
            raise ValueError(
                f"singular_value_power must be >= 0, got {self.singular_value_power}"
            )


def cooccurrence(
    sequences: list[np.ndarray], num_items: int, window: int
) -> scipy.sparse.csr_array:
    """Symmetric float64 [N, N] counts of item pairs at most `window` apart, diagonal excluded."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    flat = np.concatenate(sequences).astype(np.int64) if len(sequences) else np.zeros(0, np.int64)
    owner = np.repeat(np.arange(len(sequences)), lengths)
    firsts, seconds = [], []
    for offset in range(1, window + 1):
        same_user = owner[offset:] == owner[:-offset]
        a, b = flat[:-offset][same_user], flat[offset:][same_user]
        distinct = a != b
        firsts.append(a[distinct])
        seconds.append(b[distinct])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    counts = scipy.sparse.coo_array(
        (np.ones(2 * a.size), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(num_items, num_items),
    ).tocsr()
    counts.sum_duplicates()
    return counts


def ppmi(counts_nn: scipy.sparse.csr_array, context_smoothing: float) -> scipy.sparse.csr_array:
    """max(0, log(P(i, j) / (P(i) P_a(j)))) with P_a(j) proportional to count(j)**a."""
    coo = counts_nn.tocoo()
    row_n = np.asarray(counts_nn.sum(axis=1)).ravel()
    context_n = np.asarray(counts_nn.sum(axis=0)).ravel() ** context_smoothing
    # log(C_ij / T) - log(C_i / T) - log P_a(j): the total T cancels.
    pmi = np.log(coo.data) - np.log(row_n[coo.row]) - np.log(context_n[coo.col] / context_n.sum())
    positive = pmi > 0
    return scipy.sparse.coo_array(
        (pmi[positive], (coo.row[positive], coo.col[positive])), shape=counts_nn.shape
    ).tocsr()


def collaborative_embeddings(
    dataset: SeqRecDataset,
    options: CollaborativeOptions,
    *,
    dim: int | None,
    seed: int,
    workdir: str | None,
) -> np.ndarray:
    """float [num_items, dim]: SVD of the training co-occurrence PPMI (see module docstring)."""
    assert dim is not None  # Guaranteed by item_embeddings (needs_dim).
    counts_nn = cooccurrence(training_sequences(dataset), dataset.num_items, options.window)
    if counts_nn.nnz == 0:
        raise ValueError(
            f"dataset {dataset.name!r}: no two distinct items co-occur within window="
            f"{options.window} in the training sequences"
        )
    ppmi_nn = ppmi(counts_nn, options.context_smoothing)
    u_nd, s_d = truncated_svd(ppmi_nn, dim, seed)
    rows_nd = u_nd * s_d**options.singular_value_power
    return fill_empty_rows(rows_nd, np.diff(ppmi_nn.indptr) == 0, seed)
