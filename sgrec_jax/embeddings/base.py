"""Item embeddings behind one interface, and the linear algebra the sources share.

    x_nd = item_embeddings("text", dataset, dim=128, seed=0, workdir=run_dir, vocab_size=8000)

A source is registered in EMBEDDING_SOURCES together with a frozen dataclass of its options
(`register_source`, called by sgrec_jax/registration.py), so a config names the source and
passes its options as a mapping (an ml_collections ConfigDict works: `**cfg.embedding.options`;
`EMBEDDING_SOURCES.options(name)` gives the dict to start one from). Unknown or missing option
names fail before any work with the list of valid ones. Every source takes `normalize` (default
True): L2-normalise the rows of the result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from sgrec_jax.core.registry import Registry, field_defaults
from sgrec_jax.data.dataset import SeqRecDataset


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """Options every source takes; each source subclasses this and documents its own.

    Attributes:
      normalize: L2-normalise the rows of the result (cosine = dot product downstream).
    """

    normalize: bool = True


class BuildFn(Protocol):
    def __call__(
        self,
        dataset: SeqRecDataset,
        options: Any,
        *,
        dim: int | None,
        seed: int,
        workdir: str | None,
    ) -> np.ndarray:
        """Returns float [num_items, d] embeddings, not yet normalised."""
        ...


@dataclasses.dataclass(frozen=True)
class EmbeddingSource:
    """A registered way to embed items: its build function and its options dataclass."""

    build: BuildFn
    options: type[SourceOptions]
    needs_dim: bool


EMBEDDING_SOURCES: Registry[EmbeddingSource] = Registry("embedding source")


def register_source(
    name: str, options: type[SourceOptions], *, needs_dim: bool = True
) -> Callable[[BuildFn], BuildFn]:
    """Decorator registering `build(dataset, options, *, dim, seed, workdir)` under `name`, with
    the fields of `options` as its options (a required field defaults to None).

    `needs_dim=False` for sources whose width is fixed by their input (a file, a pretrained
    model); they accept dim=None and otherwise check that dim matches.
    """

    def decorator(build: BuildFn) -> BuildFn:
        EMBEDDING_SOURCES.register(name, defaults=field_defaults(options))(
            EmbeddingSource(build=build, options=options, needs_dim=needs_dim)
        )
        return build

    return decorator


def parse_options(source: str, options: Mapping[str, Any]) -> SourceOptions:
    """Builds the options dataclass of `source`; unknown or missing names raise ValueError."""
    resolved = EMBEDDING_SOURCES.resolve(source, options)
    fields = dataclasses.fields(EMBEDDING_SOURCES.get(source).options)
    # A required option left at None (its registered default) counts as missing.
    missing = [f.name for f in fields if _required(f) and resolved[f.name] is None]
    if missing:
        raise ValueError(
            f"embedding source {source!r} needs option(s) {', '.join(missing)}; "
            f"valid options: {', '.join(sorted(resolved))}"
        )
    return EMBEDDING_SOURCES.get(source).options(**resolved)


def _required(field: dataclasses.Field) -> bool:
    return (
        field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
    )


def item_embeddings(
    source: str,
    dataset: SeqRecDataset,
    *,
    dim: int | None,
    seed: int,
    workdir: str | os.PathLike | None = None,
    **options: Any,
) -> np.ndarray:
    """float32 [num_items, dim] embeddings of every item of `dataset` from the named source.

    Deterministic given (source, dataset, dim, seed, options). `workdir`, when given, is where a
    source keeps artefacts later stages reuse (e.g. the text source's SentencePiece model).
    """
    entry = EMBEDDING_SOURCES.get(source)
    parsed = parse_options(source, options)
    if dim is None and entry.needs_dim:
        raise ValueError(f"embedding source {source!r} needs dim (got None)")
    if dim is not None and dim < 1:
        raise ValueError(f"dim must be >= 1, got {dim}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    x_nd = np.asarray(
        entry.build(
            dataset,
            parsed,
            dim=dim,
            seed=seed,
            workdir=None if workdir is None else os.fspath(workdir),
        ),
        dtype=np.float32,
    )
    want = (dataset.num_items, dim if dim is not None else x_nd.shape[-1])
    if x_nd.shape != want:
        raise ValueError(f"embedding source {source!r} returned shape {x_nd.shape}, not {want}")
    if not np.isfinite(x_nd).all():
        raise ValueError(f"embedding source {source!r} returned non-finite values")
    if parsed.normalize:
        x_nd = l2_normalize_rows(x_nd)
    return np.ascontiguousarray(x_nd)


def l2_normalize_rows(x_nd: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; an all-zero row is an error (it has no direction)."""
    norms_n = np.linalg.norm(x_nd, axis=1, keepdims=True)
    zero = np.flatnonzero(norms_n[:, 0] == 0)
    if zero.size:
        raise ValueError(f"{zero.size} all-zero rows (first: {zero[0]}) cannot be L2-normalised")
    return x_nd / norms_n


# Distinct random streams derived from the one user seed.
_SVD_STREAM = 0
_FILL_STREAM = 1


def truncated_svd(x_nm: scipy.sparse.sparray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k singular triplets' (u [n, k], s [k]), largest first, deterministic given the seed.

    ARPACK is started from a seeded vector, and each singular vector's sign is fixed so that its
    largest-magnitude entry is positive (SVD signs are otherwise arbitrary).
    """
    n, m = x_nm.shape
    if not 1 <= k < min(n, m):
        raise ValueError(
            f"dim={k} must be < min(rows, columns) = {min(n, m)} of the {n}x{m} matrix it is "
            "taken from"
        )
    v0 = np.random.default_rng((seed, _SVD_STREAM)).standard_normal(min(n, m))
    u_nk, s_k, _ = scipy.sparse.linalg.svds(x_nm.astype(np.float64), k=k, v0=v0)
    order = np.argsort(-s_k, kind="stable")
    u_nk, s_k = u_nk[:, order], s_k[order]
    peak_k = u_nk[np.abs(u_nk).argmax(axis=0), np.arange(k)]
    u_nk = u_nk * np.where(peak_k < 0, -1.0, 1.0)
    return u_nk, s_k


def fill_empty_rows(x_nd: np.ndarray, empty_n: np.ndarray, seed: int) -> np.ndarray:
    """Replaces the rows marked in `empty_n` (items the source has no signal for) by small
    random Gaussian rows, so every item has a direction and no two such items coincide.

    Scale: 1e-3 times the mean norm of the other rows, so un-normalised outputs keep these items
    near the origin. Row i's direction depends only on (seed, i, shape), not on which other
    rows are empty.
    """
    n, d = x_nd.shape
    if not empty_n.any():
        return x_nd
    norms_n = np.linalg.norm(x_nd[~empty_n], axis=1)
    scale = 1e-3 * (float(norms_n.mean()) if norms_n.size else 1.0)
    noise_nd = np.random.default_rng((seed, _FILL_STREAM)).standard_normal((n, d))
    out = x_nd.copy()
    out[empty_n] = scale * noise_nd[empty_n]
    return out
