"""Jitted k-means (Lloyd), optionally balanced, the building block of every SID codebook.

Init is k-means++ (one draw per centroid) or K distinct random points, both from the PRNG key,
so a key fixes the result. Lloyd iterations run in one `lax.while_loop` that stops when no
assignment changes or after `iters` steps. Each step holds the [N, K] distance matrix, which
suits catalogs up to a few hundred thousand items at K = 256.

Empty clusters are re-seeded deterministically: the e-th empty cluster (in index order) takes the
e-th farthest point from its own centroid, the points the current solution explains worst.

Balanced mode replaces the nearest-centroid step by a capacity-constrained assignment (the
balanced k-means of OneRec's RQ-Kmeans): clusters in index order each take their nearest
still-free points up to a capacity of ceil(N/K) or floor(N/K), so sizes differ by at most one.
It is greedy, not an optimal balanced assignment, and later clusters get what is left, but the
Lloyd updates that follow move their centroids onto those points. Equal-sized clusters spread
items over codes and so cut SID collisions. (A Sinkhorn-balanced argmax was tried first: at an
entropy small enough to balance well it needs thousands of sweeps to converge.)

With N <= K there is nothing to cluster: every point is its own centroid, the remaining K - N
centroids repeat the points cyclically (so codes stay in 0..K-1), and `num_clusters` reports N.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

logger = logging.getLogger(__name__)

INITS = ("kmeans++", "random")


@dataclasses.dataclass(frozen=True)
class KMeansResult:
    """A fitted clustering.

    Attributes:
      centroids_kd: float32 [K, D]; each fitted centroid is the mean of its assigned points.
      assign_n: int32 [N] cluster of each point (balanced or nearest, as fitted).
      num_clusters: clusters actually fitted, min(K, N).
      iterations: Lloyd steps run.
    """

    centroids_kd: np.ndarray
    assign_n: np.ndarray
    num_clusters: int
    iterations: int


def sq_distances(x_nd: jax.Array, c_kd: jax.Array) -> jax.Array:
    """Squared Euclidean distances [N, K], clamped at 0 against cancellation."""
    cross_nk = jnp.dot(x_nd, c_kd.T, precision=lax.Precision.HIGHEST)
    d2_nk = jnp.sum(x_nd**2, 1)[:, None] - 2.0 * cross_nk + jnp.sum(c_kd**2, 1)[None, :]
    return jnp.maximum(d2_nk, 0.0)


def _init_kmeanspp(x_nd: jax.Array, key: jax.Array, k: int) -> jax.Array:
    n = x_nd.shape[0]
    first_key, key = jax.random.split(key)
    first = x_nd[jax.random.randint(first_key, (), 0, n)]
    c_kd = jnp.zeros((k, x_nd.shape[1]), x_nd.dtype).at[0].set(first)
    d2_n = sq_distances(x_nd, first[None])[:, 0]

    def body(i, carry):
        c_kd, d2_n = carry
        # All-zero distances (fewer distinct points than K): fall back to a uniform draw.
        logits_n = jnp.where(d2_n.sum() > 0, jnp.log(d2_n), 0.0)
        pick = x_nd[jax.random.categorical(jax.random.fold_in(key, i), logits_n)]
        d2_n = jnp.minimum(d2_n, sq_distances(x_nd, pick[None])[:, 0])
        return c_kd.at[i].set(pick), d2_n

    c_kd, _ = lax.fori_loop(1, k, body, (c_kd, d2_n))
    return c_kd


def _capacity_assign(d2_nk: jax.Array) -> jax.Array:
    """Exactly balanced assignment: cluster k, in index order, takes its nearest free points.

    Capacities are ceil(N/K) for the first N mod K clusters and floor(N/K) for the rest, so every
    point is taken. K sequential steps of O(N) work each (a top-k over the free points).
    """
    n, k = d2_nk.shape
    cap_max = -(-n // k)
    big_caps = n % k or k

    def take(c, carry):
        assign_n, free_n = carry
        score_n = jnp.where(free_n, -d2_nk[:, c], -jnp.inf)
        idx = lax.top_k(score_n, cap_max)[1]
        # Small clusters take one point fewer: their last pick is sent out of range and dropped.
        idx = jnp.where((jnp.arange(cap_max) < cap_max - 1) | (c < big_caps), idx, n)
        assign_n = assign_n.at[idx].set(c, mode="drop")
        return assign_n, free_n.at[idx].set(False, mode="drop")

    assign_n, _ = lax.fori_loop(0, k, take, (jnp.zeros(n, jnp.int32), jnp.ones(n, bool)))
    return assign_n


@functools.partial(jax.jit, static_argnames=("k", "iters", "balanced", "init"))
def _fit(
    x_nd: jax.Array, key: jax.Array, *, k: int, iters: int, balanced: bool, init: str
) -> tuple[jax.Array, jax.Array, jax.Array]:
    n = x_nd.shape[0]
    if init == "kmeans++":
        c_kd = _init_kmeanspp(x_nd, key, k)
    else:
        c_kd = x_nd[jax.random.choice(key, n, (k,), replace=False)]

    def update(assign_n, d2_nk, c_kd):
        counts_k = jax.ops.segment_sum(jnp.ones(n, x_nd.dtype), assign_n, k)
        sums_kd = jax.ops.segment_sum(x_nd, assign_n, k)
        c_kd = jnp.where(counts_k[:, None] > 0, sums_kd / jnp.maximum(counts_k, 1)[:, None], c_kd)
        empty_k = counts_k == 0
        own_d2_n = jnp.take_along_axis(d2_nk, assign_n[:, None], 1)[:, 0]
        farthest = lax.top_k(own_d2_n, k)[1]
        rank_k = jnp.cumsum(empty_k) - 1
        return jnp.where(empty_k[:, None], x_nd[farthest[rank_k]], c_kd)

    def cond(state):
        _, _, it, changed = state
        return (it < iters) & changed

    def body(state):
        c_kd, assign_n, it, _ = state
        d2_nk = sq_distances(x_nd, c_kd)
        if balanced:
            new_assign_n = _capacity_assign(d2_nk)
        else:
            new_assign_n = jnp.argmin(d2_nk, 1).astype(jnp.int32)
        c_kd = update(new_assign_n, d2_nk, c_kd)
        return c_kd, new_assign_n, it + 1, jnp.any(new_assign_n != assign_n)

    state = (c_kd, jnp.full(n, -1, jnp.int32), 0, jnp.array(True))
    c_kd, assign_n, it, _ = lax.while_loop(cond, body, state)
    return c_kd, assign_n, it


def kmeans(
    x_nd: np.ndarray,
    k: int,
    key: jax.Array,
    *,
    iters: int = 50,
    balanced: bool = False,
    init: str = "kmeans++",
) -> KMeansResult:
    """Clusters the rows of `x_nd` into `k` clusters; deterministic given `key`.

    Args:
      x_nd: float [N, D] points.
      k: number of clusters K.
      key: JAX PRNG key for the init.
      iters: maximum Lloyd steps (at least 1).
      balanced: capacity-constrained assignment, cluster sizes differ by at most 1 (see the
        module docstring).
      init: "kmeans++" or "random".
    """
    x_nd = np.asarray(x_nd, np.float32)
    if x_nd.ndim != 2 or x_nd.shape[0] == 0:
        raise ValueError(f"kmeans needs a non-empty [N, D] array, got shape {x_nd.shape}")
    if k < 1 or iters < 1:
        raise ValueError(f"kmeans needs k >= 1 and iters >= 1, got k={k}, iters={iters}")
    if init not in INITS:
        raise ValueError(f"unknown kmeans init {init!r}; valid: {', '.join(INITS)}")
    n = x_nd.shape[0]
    if n <= k:
        if n < k:
            logger.warning("kmeans: only %d points for %d clusters; each point is a centroid", n, k)
        return KMeansResult(
            centroids_kd=x_nd[np.arange(k) % n].copy(),
            assign_n=np.arange(n, dtype=np.int32),
            num_clusters=n,
            iterations=0,
        )
    c_kd, assign_n, it = _fit(
        jnp.asarray(x_nd), key, k=k, iters=iters, balanced=balanced, init=init
    )
    return KMeansResult(
        centroids_kd=np.asarray(c_kd),
        assign_n=np.asarray(assign_n),
        num_clusters=k,
        iterations=int(it),
    )
