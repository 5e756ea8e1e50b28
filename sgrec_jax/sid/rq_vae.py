"""RQ-VAE (TIGER): an MLP autoencoder whose latent is residual-quantized by L codebooks.

encoder: D -> hidden_dims -> latent (ReLU between layers); quantizer: level l picks the code
nearest to the residual r_l (r_0 = z, r_{l+1} = r_l - sg(e_l)); decoder mirrors the encoder and
reads the straight-through latent z + sg(sum_l e_l - z), so reconstruction gradients reach the
encoder as if quantization were the identity.

loss = mse(x_hat, x) + sum_l mse(sg(r_l), e_l) + beta * sum_l mse(r_l, sg(e_l)),
the codebook term moving codes towards residuals, the commitment term (beta 0.25, as in VQ-VAE
and TIGER) keeping the encoder close to its codes. Residuals subtract sg(e_l), so each codebook
is trained only by its own level's term.

Codebooks start from k-means on one random batch's residuals, level by level (TIGER),
so no code starts far from the data. Usage is tracked per epoch; with `reset_dead` a code chosen
by no item during an epoch is moved onto a random residual of that level from the epoch's last
batch, which revives codes that would otherwise never be picked again.

Each epoch shuffles the items and runs len // batch_size full batches (the remainder is
dropped that epoch, so one compiled step serves all batches; shuffling covers every item).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from sgrec_jax.sid.kmeans import kmeans, sq_distances


class RQVAE(nnx.Module):
    """MLP encoder/decoder around a residual quantizer with L codebooks of K codes."""

    def __init__(
        self,
        input_dim: int,
        *,
        levels: int,
        codebook_size: int,
        latent_dim: int,
        hidden_dims: Sequence[int],
        rngs: nnx.Rngs,
    ):
        dims = (input_dim, *hidden_dims, latent_dim)
        self.encoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims, dims[1:])])
        back = dims[::-1]
        self.decoder = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in zip(back, back[1:])])
        bound = 1.0 / codebook_size
        self.codebooks_lkz = nnx.Param(
            jax.random.uniform(
                rngs.params(), (levels, codebook_size, latent_dim), minval=-bound, maxval=bound
            )
        )

    @staticmethod
    def _mlp(layers: nnx.List, x: jax.Array) -> jax.Array:
        for layer in layers[:-1]:
            x = jax.nn.relu(layer(x))
        return layers[-1](x)

    def encode(self, x_bd: jax.Array) -> jax.Array:
        return self._mlp(self.encoder, x_bd)

    def decode(self, z_bz: jax.Array) -> jax.Array:
        return self._mlp(self.decoder, z_bz)


def residual_quantize(
    z_bz: jax.Array, codebooks_lkz: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Greedy residual quantization.

    Returns codes int32 [B, L], chosen codes e [L, B, Z] and the residual entering each level
    r [L, B, Z] (r_0 = z, r_{l+1} = r_l - sg(e_l)).
    """
    codes, chosen, residuals = [], [], []
    r_bz = z_bz
    for codebook_kz in codebooks_lkz:
        code_b = jnp.argmin(sq_distances(r_bz, codebook_kz), 1).astype(jnp.int32)
        e_bz = codebook_kz[code_b]
        codes.append(code_b)
        chosen.append(e_bz)
        residuals.append(r_bz)
        r_bz = r_bz - jax.lax.stop_gradient(e_bz)
    return jnp.stack(codes, 1), jnp.stack(chosen), jnp.stack(residuals)


def rqvae_loss(model: RQVAE, x_bd: jax.Array, beta: float) -> tuple[jax.Array, dict]:
    """The training loss and its parts, plus per-level code counts [L, K] of the batch."""
    sg = jax.lax.stop_gradient
    codebooks_lkz = model.codebooks_lkz[...]
    z_bz = model.encode(x_bd)
    codes_bl, e_lbz, r_lbz = residual_quantize(z_bz, codebooks_lkz)
    x_hat_bd = model.decode(z_bz + sg(e_lbz.sum(0) - z_bz))
    recon = jnp.mean((x_hat_bd - x_bd) ** 2)
    codebook = jnp.mean((sg(r_lbz) - e_lbz) ** 2, axis=(1, 2)).sum()
    commit = jnp.mean((r_lbz - sg(e_lbz)) ** 2, axis=(1, 2)).sum()
    loss = recon + codebook + beta * commit
    size = codebooks_lkz.shape[1]
    counts_lk = jax.vmap(lambda c: jnp.bincount(c, length=size))(codes_bl.T)
    return loss, dict(loss=loss, recon=recon, codebook=codebook, commit=commit, counts=counts_lk)


@functools.partial(jax.jit, static_argnums=0)
def _train_step(graphdef: nnx.GraphDef, state: nnx.State, x_bd: jax.Array, beta: float):
    model, optimizer = nnx.merge(graphdef, state)
    (_, aux), grads = nnx.value_and_grad(rqvae_loss, has_aux=True)(model, x_bd, beta)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), aux


@functools.partial(jax.jit, static_argnums=0)
def _quantize(graphdef: nnx.GraphDef, state: nnx.State, x_bd: jax.Array):
    """Codes [B, L] and level residuals [L, B, Z] of a batch under the current model."""
    model = nnx.merge(graphdef, state)
    codes_bl, _, r_lbz = residual_quantize(model.encode(x_bd), model.codebooks_lkz[...])
    return codes_bl, r_lbz


@dataclasses.dataclass(frozen=True)
class RQVAEResult:
    """A trained RQ-VAE and the SIDs it gives.

    Attributes:
      codes_nl: int32 [N, L] codes of every item under the final model.
      model: the trained RQVAE.
      loss_history: float32 [epochs] mean training loss per epoch.
      usage_history: float32 [epochs, L] fraction of each codebook used during each epoch
        (before that epoch's dead-code reset).
      codes_reset: total dead codes reset over training.
    """

    codes_nl: np.ndarray
    model: RQVAE
    loss_history: np.ndarray
    usage_history: np.ndarray
    codes_reset: int


def encode_codes(model: RQVAE, x_nd: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """SIDs int32 [N, L] of `x_nd` under `model` (greedy residual quantization)."""
    graphdef, state = nnx.split(model)
    x_nd = np.asarray(x_nd, np.float32)
    parts = [
        np.asarray(_quantize(graphdef, state, jnp.asarray(x_nd[i : i + batch_size]))[0])
        for i in range(0, len(x_nd), batch_size)
    ]
    return np.concatenate(parts).astype(np.int32)


def _kmeans_init(model: RQVAE, x_bd: np.ndarray, key: jax.Array, iters: int) -> None:
    """Sets each codebook to k-means centroids of its level's residuals on `x_bd` (TIGER)."""
    codebooks_lkz = np.array(model.codebooks_lkz[...])
    r_bz = np.asarray(model.encode(jnp.asarray(x_bd)))
    for level in range(codebooks_lkz.shape[0]):
        fit = kmeans(r_bz, codebooks_lkz.shape[1], jax.random.fold_in(key, level), iters=iters)
        codebooks_lkz[level] = fit.centroids_kd
        r_bz = r_bz - fit.centroids_kd[fit.assign_n]
    model.codebooks_lkz[...] = jnp.asarray(codebooks_lkz)


def rq_vae(
    embeddings_nd: np.ndarray,
    *,
    levels: int,
    codebook_size: int,
    seed: int,
    epochs: int = 200,
    batch_size: int = 1024,
    learning_rate: float = 1e-3,
    latent_dim: int = 32,
    hidden_dims: Sequence[int] = (512, 256, 128),
    beta: float = 0.25,
    kmeans_init: bool = True,
    kmeans_iters: int = 50,
    reset_dead: bool = True,
) -> RQVAEResult:
    """Trains an RQ-VAE on the item embeddings with Adam and returns the items' SIDs.

    All randomness (parameter init, k-means init, shuffling, resets) derives from `seed`.
    """
    if levels < 1 or codebook_size < 1 or epochs < 1 or batch_size < 1:
        raise ValueError(
            "rq_vae needs levels, codebook_size, epochs and batch_size >= 1, got "
            f"{levels}, {codebook_size}, {epochs}, {batch_size}"
        )
    x_nd = np.asarray(embeddings_nd, np.float32)
    n = len(x_nd)
    batch = min(batch_size, n)
    rng = np.random.default_rng(seed)
    model = RQVAE(
        x_nd.shape[1],
        levels=levels,
        codebook_size=codebook_size,
        latent_dim=latent_dim,
        hidden_dims=tuple(hidden_dims),
        rngs=nnx.Rngs(seed),
    )
    optimizer = nnx.Optimizer(model, optax.adam(learning_rate), wrt=nnx.Param)
    if kmeans_init:
        init_rows = rng.choice(n, batch, replace=False)
        init_key = jax.random.fold_in(jax.random.key(seed), 1)
        _kmeans_init(model, x_nd[init_rows], init_key, kmeans_iters)
    graphdef, state = nnx.split((model, optimizer))
    losses, usages, codes_reset = [], [], 0
    for _ in range(epochs):
        order = rng.permutation(n)
        counts_lk = jnp.zeros((levels, codebook_size), jnp.int32)
        loss_sum = jnp.zeros(())
        steps = n // batch
        for step in range(steps):
            x_bd = jnp.asarray(x_nd[order[step * batch : (step + 1) * batch]])
            state, aux = _train_step(graphdef, state, x_bd, beta)
            counts_lk = counts_lk + aux["counts"]
            loss_sum = loss_sum + aux["loss"]
        losses.append(float(loss_sum) / steps)
        dead_lk = np.asarray(counts_lk) == 0
        usages.append(1.0 - dead_lk.mean(1))
        if reset_dead and dead_lk.any():
            state = _reset_dead_codes(graphdef, state, dead_lk, x_bd, rng)
            codes_reset += int(dead_lk.sum())
    model, _ = nnx.merge(graphdef, state)
    return RQVAEResult(
        codes_nl=encode_codes(model, x_nd),
        model=model,
        loss_history=np.asarray(losses, np.float32),
        usage_history=np.asarray(usages, np.float32),
        codes_reset=codes_reset,
    )


def _reset_dead_codes(
    graphdef: nnx.GraphDef,
    state: nnx.State,
    dead_lk: np.ndarray,
    x_bd: jax.Array,
    rng: np.random.Generator,
) -> nnx.State:
    """Moves each dead code onto a random residual of its level from the batch `x_bd`."""
    model, optimizer = nnx.merge(graphdef, state)
    _, r_lbz = _quantize(*nnx.split(model), x_bd)
    r_lbz = np.asarray(r_lbz)
    codebooks_lkz = np.array(model.codebooks_lkz[...])
    for level, dead_k in enumerate(dead_lk):
        dead = np.flatnonzero(dead_k)
        rows = rng.choice(r_lbz.shape[1], len(dead), replace=len(dead) > r_lbz.shape[1])
        codebooks_lkz[level, dead] = r_lbz[level, rows]
    model.codebooks_lkz[...] = jnp.asarray(codebooks_lkz)
    return nnx.state((model, optimizer))
