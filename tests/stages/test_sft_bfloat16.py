"""The SFT step under a bfloat16 compute dtype (model.options.dtype): parameters and optimizer
state stay float32, and one step's loss, gradients and updated parameters stay close to the
float32 step's from the same initial parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.stages.sft import sft_loss
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_train_step
from tests.models.tiny import CODES, NUM_ITEMS, H, tiny

LR = 1e-2


def sft_batch(size: int = 32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    history = rng.integers(0, NUM_ITEMS, (size, H)).astype(np.int32)
    mask = np.arange(H)[None] >= rng.integers(0, H, size)[:, None]
    history[~mask] = -1
    return {"history": history, "history_mask": mask,
            "target": rng.integers(0, NUM_ITEMS, size).astype(np.int32)}


def one_step(dtype: str, optimizer: optax.GradientTransformation):
    """(state before, state after, metrics) of one jitted SFT step of the tiny encoder-decoder
    (dropout 0, so the two dtypes see the same function)."""
    model = tiny("encoder_decoder", "code", dropout=0.0, dtype=dtype)
    mesh = make_mesh()
    graphdef, state, sharding = create_train_state(model, optimizer, jax.random.key(0), mesh)
    before = jax.tree.map(np.asarray, state.params)
    step = make_train_step(graphdef, sft_loss, optimizer, mesh, sharding)
    after, metrics = step(state, host_to_global(sft_batch(), mesh))
    return before, after, jax.tree.map(float, metrics)


def float_leaves(tree) -> list[np.dtype]:
    return [x.dtype for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]


def test_bfloat16_step_keeps_float32_state_and_tracks_the_float32_step():
    assert CODES.shape[0] == NUM_ITEMS
    sgd = optax.sgd(LR)  # updated params = params - LR * grads: compares the gradients
    before32, after32, metrics32 = one_step("float32", sgd)
    before16, after16, metrics16 = one_step("bfloat16", sgd)
    jax.tree.map(np.testing.assert_array_equal, before16, before32)  # same initial params
    assert set(float_leaves(after16.params)) == {np.dtype("float32")}

    assert metrics16["loss"] == pytest.approx(metrics32["loss"], rel=1e-2)
    assert metrics16["grad_norm"] == pytest.approx(metrics32["grad_norm"], rel=3e-2)
    delta32 = np.concatenate([np.ravel(a - b) for a, b in zip(
        jax.tree.leaves(after32.params), jax.tree.leaves(before32))])
    delta16 = np.concatenate([np.ravel(a - b) for a, b in zip(
        jax.tree.leaves(after16.params), jax.tree.leaves(before16))])
    assert np.abs(delta32).max() > 1e-4  # the step moved the parameters
    relative = np.linalg.norm(delta16 - delta32) / np.linalg.norm(delta32)
    assert relative < 0.05, relative
    cosine = delta16 @ delta32 / (np.linalg.norm(delta16) * np.linalg.norm(delta32))
    assert cosine > 0.99, cosine


def test_bfloat16_step_with_adamw_keeps_float32_optimizer_state():
    adamw = make_optimizer(LR, warmup_steps=0, total_steps=10, weight_decay=0.01)
    _, after32, metrics32 = one_step("float32", adamw)
    _, after16, metrics16 = one_step("bfloat16", adamw)
    assert set(float_leaves(after16.params)) == {np.dtype("float32")}
    assert set(float_leaves(after16.opt_state)) == {np.dtype("float32")}
    assert metrics16["skipped"] == 0 and np.isfinite(metrics16["loss"])
    assert metrics16["loss"] == pytest.approx(metrics32["loss"], rel=1e-2)
    # Adam's first update is about LR * sign(grad) per entry, so bfloat16 can only move an
    # entry the other way where the float32 gradient is near zero: by at most 2 LR.
    for a, b in zip(jax.tree.leaves(after16.params), jax.tree.leaves(after32.params)):
        assert np.abs(np.asarray(a) - np.asarray(b)).max() <= 2 * LR * 1.01
