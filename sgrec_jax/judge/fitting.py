"""The small training loop the judge's stage-2 models share (aggregator, Bradley-Terry, scorer),
and their parameter files.

The models are tiny MLPs on in-memory arrays, so the loop is the loop skeleton
(`train.loop.run_loop`) without a run directory (no checkpoints or metric files) around the
generic jitted step of `train.train_state`, fed seeded shuffled mini-batches (epoch by epoch),
on one device or on the experiment's mesh (`mesh`): each mini-batch is split over the mesh's
devices and large parameters are FSDP-sharded, like the generator's SFT and RL steps. Every
process holds all the rows, so a batch is cut from the same rows on every host. An optional
jitted `prepare(model, batch, rng) -> (batch, stats)` runs before each batch's updates with the
current model: pairwise GRPO samples its groups there, so pi_old is the policy that sampled them
and the `updates_per_batch` updates reuse one rollout.

The trained model comes back replicated on every mesh device, so any process can read or save it
and jitted code on the same mesh (the RL step's reward channels) takes it as is. Trained
parameters are saved as an .npz keyed by each array's pytree path (`save_params`) and restored
into a freshly built model of the same shape (`restore_params`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from sgrec_jax.core.files import read_npz, write_npz
from sgrec_jax.core.sharding import batch_sharding, make_mesh, replicated
from sgrec_jax.train.loop import LoopSettings, run_loop
from sgrec_jax.train.train_state import (
    LossFn,
    create_train_state,
    make_optimizer,
    make_train_step,
)

Batch = dict[str, jax.Array]
PrepareFn = Callable[[nnx.Module, Batch, jax.Array], tuple[Batch, dict[str, jax.Array]]]
LOG_EVERY = 100  # Mini-batches between progress lines.


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """num_batches mini-batches of batch_size rows, updates_per_batch optimizer steps on each."""

    num_batches: int = 300
    batch_size: int = 256
    updates_per_batch: int = 1
    learning_rate: float = 3e-3
    warmup_steps: int = 10

    def __post_init__(self):
        if min(self.num_batches, self.batch_size, self.updates_per_batch) < 1:
            raise ValueError(f"num_batches, batch_size, updates_per_batch must be >= 1: {self}")


def _batches(n: int, batch_size: int, num_batches: int, seed: int):
    """Row indices of each mini-batch: seeded permutations, epoch after epoch (always full)."""
    rng = np.random.default_rng(seed)
    order = np.zeros(0, np.int64)
    for _ in range(num_batches):
        while len(order) < batch_size:
            order = np.concatenate([order, rng.permutation(n)])
        yield order[:batch_size]
        order = order[batch_size:]


def _on_mesh(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> Batch:
    """Global arrays of a batch every process holds whole (each device takes its rows)."""
    return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
            for k, v in batch.items()}


def fit(
    model: nnx.Module,
    loss_fn: LossFn,
    arrays: Mapping[str, np.ndarray],
    options: FitOptions,
    seed: int,
    prepare: PrepareFn | None = None,
    mesh: Mesh | None = None,
) -> tuple[nnx.Module, list[dict[str, float]]]:
    """Trains `model` on rows of `arrays` (equal leading axes); returns it and per-batch metrics.

    mesh: where to train (None = one device); batch_size must split evenly over its devices.
    """
    sizes = {k: len(v) for k, v in arrays.items()}
    n = next(iter(sizes.values()))
    if n == 0 or any(s != n for s in sizes.values()):
        raise ValueError(f"need equal, non-zero numbers of rows, got {sizes}")
    mesh = make_mesh(data=1, fsdp=1) if mesh is None else mesh
    if options.batch_size % mesh.size:
        raise ValueError(f"batch_size {options.batch_size} does not split evenly over the "
                         f"{mesh.size} devices of the mesh {dict(mesh.shape)}")
    total = options.num_batches * options.updates_per_batch
    optimizer = make_optimizer(
        options.learning_rate, warmup_steps=min(options.warmup_steps, total - 1),
        total_steps=total, clip_norm=1.0, final_lr_fraction=0.1,
    )
    graphdef, state, sharding = create_train_state(
        model, optimizer, jax.random.key(seed), mesh)
    train_step = make_train_step(graphdef, loss_fn, optimizer, mesh, sharding)
    rows, whole = batch_sharding(mesh), replicated(mesh)
    jit_prepare = None
    if prepare is not None:
        @functools.partial(
            jax.jit, in_shardings=(sharding.params, sharding.model_state, rows, whole),
            out_shardings=(rows, whole))
        def jit_prepare(params, model_state, batch, rng):
            return prepare(nnx.merge(graphdef, params, model_state, copy=True), batch, rng)

    def keys():
        rng = jax.random.key(seed + 1)
        while True:
            rng, key = jax.random.split(rng)
            yield key

    batches = ((_on_mesh({k: np.asarray(v[index]) for k, v in arrays.items()}, rows), key)
               for index, key in zip(_batches(n, options.batch_size, options.num_batches, seed),
                                     keys()))
    history: list[dict[str, float]] = []

    def fit_step(state, batch_and_key):
        batch, key = batch_and_key
        stats = {}
        if jit_prepare is not None:
            batch, stats = jit_prepare(state.params, state.model_state, batch, key)
        for _ in range(options.updates_per_batch):
            state, metrics = train_step(state, batch)
        history.append({k: float(v) for k, v in {**stats, **metrics}.items()})
        return state, history[-1]

    state = run_loop(state=state, step_fn=fit_step, data=batches, settings=LoopSettings(
        num_steps=options.num_batches, log_every=LOG_EVERY)).state
    params, model_state = jax.jit(lambda *x: x, out_shardings=whole)(
        state.params, state.model_state)
    return nnx.merge(graphdef, params, model_state), history


def _flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    leaves = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save_params(path: str | os.PathLike, model: nnx.Module) -> None:
    """Atomically writes the model's parameters to an .npz keyed by their pytree paths."""
    write_npz(path, **_flat_params(model))


def restore_params(path: str | os.PathLike, model: nnx.Module) -> nnx.Module:
    """Loads `save_params`'s file into `model` (built with the same shapes); returns it."""
    want = _flat_params(model)
    got = read_npz(path)
    bad = sorted(k for k in set(want) | set(got)
                 if k not in got or k not in want or got[k].shape != want[k].shape)
    if bad:
        raise ValueError(f"{os.fspath(path)}: parameters do not match the model at {bad[:3]}")
    state = nnx.state(model, nnx.Param)
    paths, treedef = jax.tree_util.tree_flatten_with_path(state)
    leaves = [got[jax.tree_util.keystr(p)] for p, _ in paths]
    nnx.update(model, jax.tree_util.tree_unflatten(treedef, leaves))
    return model
