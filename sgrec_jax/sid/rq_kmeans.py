"""Residual quantization by k-means per level (RQ-Kmeans): the training-free SID baseline.

Level 0 clusters the embeddings; each next level clusters what the previous levels left over
(x - sum of the chosen centroids), so each code refines the previous ones and the sum of the
chosen centroids approximates x more closely with every level.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from sgrec_jax.sid.kmeans import kmeans


@dataclasses.dataclass(frozen=True)
class RQKMeansResult:
    """A fitted residual quantizer.

    Attributes:
      codes_nl: int32 [N, L] code of each item at each level.
      codebooks_lkd: float32 [L, K, D] centroids of each level.
    """

    codes_nl: np.ndarray
    codebooks_lkd: np.ndarray


def rq_kmeans(
    embeddings_nd: np.ndarray,
    *,
    levels: int,
    codebook_size: int,
    seed: int,
    iters: int = 50,
    balanced: bool = False,
    init: str = "kmeans++",
) -> RQKMeansResult:
    """Fits `levels` k-means codebooks of `codebook_size` codes on successive residuals.

    Level l uses the PRNG key fold_in(key(seed), l); `iters`, `balanced` and `init` are passed
    to `kmeans` at every level.
    """
    if levels < 1:
        raise ValueError(f"rq_kmeans needs levels >= 1, got {levels}")
    residual_nd = np.asarray(embeddings_nd, np.float32)
    key = jax.random.key(seed)
    codes, codebooks = [], []
    for level in range(levels):
        fit = kmeans(
            residual_nd,
            codebook_size,
            jax.random.fold_in(key, level),
            iters=iters,
            balanced=balanced,
            init=init,
        )
        residual_nd = residual_nd - fit.centroids_kd[fit.assign_n]
        codes.append(fit.assign_n)
        codebooks.append(fit.centroids_kd)
    return RQKMeansResult(
        codes_nl=np.stack(codes, 1).astype(np.int32), codebooks_lkd=np.stack(codebooks)
    )


def reconstruct(codes_nl: np.ndarray, codebooks_lkd: np.ndarray) -> np.ndarray:
    """Sum of the chosen centroids over the given levels: float32 [N, D].

    Pass the first l columns of `codes_nl` to reconstruct from the first l levels.
    """
    x_nd = np.zeros((codes_nl.shape[0], codebooks_lkd.shape[2]), np.float32)
    for level in range(codes_nl.shape[1]):
        x_nd += codebooks_lkd[level][codes_nl[:, level]]
    return x_nd
