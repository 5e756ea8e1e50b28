"""The quantizer registry: item embeddings -> SID codes, looked up by name from the config.

Every entry is a fit function
    fit(embeddings_nd, *, levels, codebook_size, seed, **options) -> result with .codes_nl
registered (by sgrec_jax/registration.py) with the defaults of its keyword-only options
(sid/defaults.py; `QUANTIZERS.options(name)` lists them for a config). Call `quantize`, which
checks the option names and the embeddings first, so bad input fails before any JAX work, and
returns the codes int32 [N, L].
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

import numpy as np

from sgrec_jax.core.registry import Registry
from sgrec_jax.data.errors import DataFormatError


class QuantizerFit(Protocol):
    """What a fit function returns: at least the codes int32 [N, L]."""

    codes_nl: np.ndarray


QUANTIZERS: Registry[Callable[..., QuantizerFit]] = Registry("quantizer")


def check_embeddings(
    embeddings_nd: np.ndarray, source: str | os.PathLike | None = None
) -> np.ndarray:
    """float32 [N, D] embeddings, or a DataFormatError naming `source` and the first bad row."""
    x = np.asarray(embeddings_nd)
    if x.ndim != 2 or 0 in x.shape:
        raise DataFormatError(source, f"embeddings must be a non-empty [N, D] array, got {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise DataFormatError(source, f"embeddings must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    bad = np.flatnonzero(~np.isfinite(x).all(1))
    if len(bad):
        raise DataFormatError(source, f"embedding row {bad[0]} (item index) has NaN or inf values")
    return x


def quantize(
    name: str,
    embeddings_nd: np.ndarray,
    *,
    levels: int,
    codebook_size: int,
    seed: int,
    source: str | os.PathLike | None = None,
    **options,
) -> np.ndarray:
    """SID codes int32 [N, levels] of the items from the quantizer `name`.

    `source` names where the embeddings came from, for error messages.
    """
    options = QUANTIZERS.resolve(name, options)
    x = check_embeddings(embeddings_nd, source)
    fit = QUANTIZERS.get(name)
    result = fit(x, levels=levels, codebook_size=codebook_size, seed=seed, **options)
    return np.asarray(result.codes_nl, np.int32)
