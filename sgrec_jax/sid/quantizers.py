"""The quantizer registry: item embeddings -> SID codes, looked up by name from the config.

Every entry is a fit function
    fit(embeddings_nd, *, levels, codebook_size, seed, **options) -> result with .codes_nl
whose keyword-only options carry their defaults (`default_options(name)` lists them for a
config). Call `quantize`, which checks the option names and the embeddings first, so bad
input fails before any JAX work, and returns the codes int32 [N, L].
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from sgrec_jax.core.registry import Registry
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.sid.rq_kmeans import rq_kmeans
from sgrec_jax.sid.rq_vae import rq_vae

_COMMON = ("levels", "codebook_size", "seed")


class QuantizerFit(Protocol):
    """What a fit function returns: at least the codes int32 [N, L]."""

    codes_nl: np.ndarray


QUANTIZERS: Registry[Callable[..., QuantizerFit]] = Registry("quantizer")
QUANTIZERS.register("rq_kmeans")(rq_kmeans)
QUANTIZERS.register("rq_vae")(rq_vae)


def default_options(name: str) -> dict[str, Any]:
    """Options of quantizer `name` with their defaults: the dict a config starts from.

    Options are the fit function's keyword-only arguments other than levels, codebook_size, seed.
    """
    params = inspect.signature(QUANTIZERS.get(name)).parameters.values()
    return {
        p.name: p.default
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _COMMON
    }


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
    fit = QUANTIZERS.get(name)
    valid = default_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for quantizer {name!r}; "
            f"valid options: {', '.join(sorted(valid))}"
        )
    x = check_embeddings(embeddings_nd, source)
    result = fit(x, levels=levels, codebook_size=codebook_size, seed=seed, **options)
    return np.asarray(result.codes_nl, np.int32)
