"""The train state of an NNX model and the generic jitted train step built on it.

    optimizer = make_optimizer(lr=1e-3, warmup_steps=100, total_steps=10_000,
                               weight_decay=0.01, clip_norm=1.0)
    graphdef, state, state_sharding = create_train_state(model, optimizer, jax.random.key(0), mesh)
    train_step = make_train_step(graphdef, loss_fn, optimizer, mesh, state_sharding)
    state, metrics = train_step(state, host_to_global(batch, mesh))

The model lives in the state as arrays only (`nnx.split`): the graphdef is static and closed over
by the step, so the step is a pure function of (state, batch) that jit compiles once, and the
state is a plain pytree that Orbax saves and restores onto any mesh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh

from sgrec_jax.core.sharding import MIN_FSDP_SIZE, batch_sharding, replicated, shard_params

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]
# loss_fn(model, batch, rng) -> (scalar loss, scalar aux metrics); rng is fresh every step.
LossFn = Callable[[nnx.Module, Batch, jax.Array], tuple[jax.Array, Metrics]]
# Names the step itself reports; an aux metric may not reuse them.
STEP_METRICS = ("loss", "grad_norm", "learning_rate", "skipped", "nonfinite_steps")


@struct.dataclass
class TrainState:
    """Everything a training run carries from step to step, as arrays.

    Attributes:
      step: int32 [], train steps taken (skipped updates included, so it matches the number of
        batches read).
      params: the model's nnx.Param variables.
      model_state: every other model variable (e.g. batch statistics), updated by the forward.
      opt_state: the optax state.
      rng: PRNG key; each step splits a fresh key for loss_fn from it.
      nonfinite_steps: int32 [], steps whose update was skipped for a non-finite loss or gradient.
      extra: arrays of stateful estimators (e.g. RL baselines); the generic step carries them
        through unchanged.
    """

    step: jax.Array
    params: nnx.State
    model_state: nnx.State
    opt_state: optax.OptState
    rng: jax.Array
    nonfinite_steps: jax.Array
    extra: dict[str, Any]


def _split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    return nnx.split(model, nnx.Param, ...)


def _decay_mask(params: Any) -> Any:
    # Decay matrices and embeddings only; biases and norm scales are not decayed.
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def _adamw(
    learning_rate: Any, weight_decay: Any, clip_norm: float | None
) -> optax.GradientTransformation:
    adamw = optax.adamw(learning_rate, weight_decay=weight_decay, mask=_decay_mask)
    if clip_norm is None:
        return adamw
    return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


def make_optimizer(
    lr: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float = 0.0,
    clip_norm: float | None = 1.0,
    final_lr_fraction: float = 0.0,
) -> optax.GradientTransformation:
    """AdamW after global-norm clipping, with linear warmup to `lr` then cosine decay.

    The learning rate goes 0 -> lr over `warmup_steps`, then down to lr * final_lr_fraction at
    `total_steps`. Weight decay applies to arrays of rank >= 2. The schedule's current value is
    kept in the optimizer state (`inject_hyperparams`), so the train step can report it.
    """
    if lr <= 0 or not 0 <= warmup_steps < total_steps:
        raise ValueError(
            f"need lr > 0 and 0 <= warmup_steps < total_steps, got lr={lr}, "
            f"warmup_steps={warmup_steps}, total_steps={total_steps}"
        )
    if weight_decay < 0 or (clip_norm is not None and clip_norm <= 0):
        raise ValueError(f"need weight_decay >= 0, clip_norm > 0, got {weight_decay}, {clip_norm}")
    schedule = learning_rate_schedule(lr, warmup_steps, total_steps, final_lr_fraction)
    return optax.inject_hyperparams(_adamw, static_args=("clip_norm",))(
        learning_rate=schedule, weight_decay=weight_decay, clip_norm=clip_norm
    )


def learning_rate_schedule(
    lr: float, warmup_steps: int, total_steps: int, final_lr_fraction: float = 0.0
) -> optax.Schedule:
    """0 -> lr linearly over `warmup_steps`, then cosine to lr * final_lr_fraction at
    `total_steps`. Without warmup it is optax's plain cosine decay: the same values as the
    warmup schedule with 0 steps, without the warning optax logs for a zero-step ramp."""
    if warmup_steps:
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup_steps, decay_steps=total_steps,
            end_value=lr * final_lr_fraction,
        )
    return optax.cosine_decay_schedule(init_value=lr, decay_steps=total_steps,
                                       alpha=final_lr_fraction)


def create_train_state(
    model: nnx.Module,
    optimizer: optax.GradientTransformation,
    rng: jax.Array,
    mesh: Mesh,
    *,
    extra: Mapping[str, Any] | None = None,
    min_fsdp_size: int = MIN_FSDP_SIZE,
) -> tuple[nnx.GraphDef, TrainState, TrainState]:
    """Splits `model`, initialises the optimizer and places the state on `mesh`.

    Every array of the state follows the FSDP rule of `core.sharding.shard_params`, so optimizer
    moments are sharded like their parameters. The optimizer is initialised inside jit with those
    output shardings, so its moments are never gathered on one device.

    Returns:
      (graphdef, state, state_sharding): state_sharding has the state's structure with a
      NamedSharding per array; pass it to `make_train_step`.
    """
    graphdef, params, model_state = _split(model)

    def init(params: nnx.State, model_state: nnx.State, rng: jax.Array, extra: dict) -> TrainState:
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            model_state=model_state,
            opt_state=optimizer.init(params),
            rng=rng,
            nonfinite_steps=jnp.zeros((), jnp.int32),
            extra=extra,
        )

    args = (params, model_state, rng, dict(extra or {}))
    state_sharding = shard_params(jax.eval_shape(init, *args), mesh, min_fsdp_size)
    state = jax.jit(init, out_shardings=state_sharding)(*args)
    return graphdef, state, state_sharding


def _all_finite(tree: Any) -> jax.Array:
    finite = jnp.array(True)
    for x in jax.tree.leaves(tree):
        finite &= jnp.isfinite(x).all()
    return finite


def make_update(
    graphdef: nnx.GraphDef, loss_fn: LossFn | Sequence[LossFn],
    optimizer: optax.GradientTransformation,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The pure, unjitted `update(state, batch) -> (state, metrics)` that `make_train_step` jits.

    For callers that run it inside their own jitted function (e.g. several updates per RL rollout
    batch under `lax.scan`). A step whose loss or gradients are not all finite leaves params,
    model state and optimizer state unchanged (the step counter and rng still advance) and
    reports skipped = 1.

    loss_fn may be a sequence of T >= 2 loss functions, the terms of one loss: each is
    differentiated on its own (its own forward pass, so a term that needs only part of the model's
    work pays only for that), and the optimizer takes the T gradients stacked on a leading axis
    (`per_term_optimizer.per_term_optimizer`, one optimizer per term). The model state carried on
    is the first term's; the terms' aux metrics must not share names.

    Metrics (scalars): loss (the terms' sum), the aux metrics of loss_fn, grad_norm (of the
    whole loss, before clipping), learning_rate (when the optimizer records one, as
    `make_optimizer`'s does; the first term's), skipped (0 or 1) and nonfinite_steps (the running
    count of skipped steps).
    """
    loss_fns = tuple(loss_fn) if isinstance(loss_fn, Sequence) else (loss_fn,)
    if not loss_fns:
        raise ValueError("make_update needs at least one loss function")

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        rng, step_rng = jax.random.split(state.rng)

        def loss_of(fn: LossFn) -> Callable[[nnx.State], tuple[jax.Array, tuple]]:
            def loss(params: nnx.State) -> tuple[jax.Array, tuple[Metrics, nnx.State]]:
                # Fresh Variables at this trace level, so the forward may update model_state.
                model = nnx.merge(graphdef, params, state.model_state, copy=True)
                value, aux = fn(model, batch, step_rng)
                return value, (aux, _split(model)[2])
            return loss

        terms = [jax.value_and_grad(loss_of(fn), has_aux=True)(state.params) for fn in loss_fns]
        (loss, (aux, model_state)), grads = terms[0]
        loss_grads = grads
        if len(terms) > 1:
            for (term_loss, (term_aux, _)), term_grads in terms[1:]:
                shared = set(aux) & set(term_aux)
                if shared:
                    raise ValueError(f"the loss terms' aux metrics {sorted(shared)} clash")
                aux = {**aux, **term_aux}
                loss = loss + term_loss
                loss_grads = jax.tree.map(jnp.add, loss_grads, term_grads)
            grads = jax.tree.map(lambda *g: jnp.stack(g), *(term[1] for term in terms))
        clash = set(aux) & set(STEP_METRICS)
        if clash:
            raise ValueError(f"loss_fn aux metrics {sorted(clash)} clash with the step's own")
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        finite = jnp.isfinite(loss) & _all_finite(grads)

        def if_finite(new: Any, old: Any) -> Any:
            return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

        skipped = (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=if_finite(params, state.params),
            model_state=if_finite(model_state, state.model_state),
            opt_state=if_finite(opt_state, state.opt_state),
            rng=rng,
            nonfinite_steps=state.nonfinite_steps + skipped,
        )
        metrics = {
            "loss": loss,
            **aux,
            "grad_norm": optax.tree.norm(loss_grads),
            "skipped": skipped,
            "nonfinite_steps": new_state.nonfinite_steps,
        }
        # inject_hyperparams also keeps a schedule state under that name; take the value (the
        # first optimizer's, of several per-term ones).
        learning_rates = optax.tree_utils.tree_get_all_with_path(
            opt_state, "learning_rate", filtering=lambda _, value: isinstance(value, jax.Array)
        )
        if learning_rates:
            metrics["learning_rate"] = learning_rates[0][1]
        return new_state, metrics

    return train_step


def make_train_step(
    graphdef: nnx.GraphDef,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    mesh: Mesh,
    state_sharding: TrainState,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The jitted `train_step(state, batch) -> (state, metrics)` of `make_update`.

    The batch's leading axis is split over the mesh (`core.sharding.batch_sharding`); the state is
    donated, so the caller must not use the state it passed in again. Metrics are replicated.
    """
    return jax.jit(
        make_update(graphdef, loss_fn, optimizer),
        in_shardings=(state_sharding, batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated(mesh)),
        donate_argnums=(0,),
    )
