"""The "npy" source: embeddings computed elsewhere, read from a `.npy` file and validated.

The file must hold a float [num_items, d] array whose row i is the item with internal index i,
with finite values; every problem is a DataFormatError naming the file.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.embeddings.base import SourceOptions


@dataclasses.dataclass(frozen=True, kw_only=True)
class NpyOptions(SourceOptions):
    """Options of the "npy" source.

    Attributes:
      path: the `.npy` file (required); row i embeds the item with internal index i.
    """

    path: str


def load_embeddings(
    path: str, num_items: int, dim: int | None, *, nonzero_rows: bool
) -> np.ndarray:
    """The validated float [num_items, d] array in `path` (d == dim unless dim is None).

    `nonzero_rows` also rejects all-zero rows, which cannot be L2-normalised.
    """
    try:
        x_nd = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except (OSError, ValueError) as e:
        raise DataFormatError(path, f"not a readable numeric .npy file ({e})") from None
    if not isinstance(x_nd, np.ndarray):
        x_nd.close()
        raise DataFormatError(path, "is an .npz archive; expected a single .npy array")
    if x_nd.ndim != 2:
        raise DataFormatError(path, f"expected a 2-D array [items, dim], got shape {x_nd.shape}")
    if not np.issubdtype(x_nd.dtype, np.floating):
        raise DataFormatError(path, f"expected a float array, got dtype {x_nd.dtype}")
    if x_nd.shape[0] != num_items:
        raise DataFormatError(
            path, f"has {x_nd.shape[0]} rows but the dataset has {num_items} items"
        )
    if dim is not None and x_nd.shape[1] != dim:
        raise DataFormatError(path, f"has {x_nd.shape[1]} columns but dim={dim} was asked for")
    finite_n = np.isfinite(x_nd).all(axis=1)
    if not finite_n.all():
        bad = np.flatnonzero(~finite_n)
        raise DataFormatError(
            path, f"{bad.size} rows have NaN or infinite values (first: row {bad[0]})"
        )
    if nonzero_rows:
        zero = np.flatnonzero(~x_nd.any(axis=1))
        if zero.size:
            raise DataFormatError(
                path,
                f"{zero.size} rows are all zeros and cannot be L2-normalised (first: row "
                f"{zero[0]}); pass normalize=False to keep them",
            )
    return x_nd


def npy_embeddings(
    dataset: SeqRecDataset,
    options: NpyOptions,
    *,
    dim: int | None,
    seed: int,
    workdir: str | None,
) -> np.ndarray:
    """The validated array of `options.path`; seed and workdir are unused (nothing is learned)."""
    return load_embeddings(
        options.path, dataset.num_items, dim, nonzero_rows=options.normalize
    )
