"""per_term_optimizer: each term's gradients go through its own optimizer (moments, clipping,
learning rate), the update is their sum; make_update given several loss functions
differentiates each and refuses terms whose metrics clash."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.train.per_term_optimizer import per_term_optimizer
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_update
from tests.models.tiny import batch, tiny


def _optimizers():
    return [make_optimizer(1e-2, 0, 10, clip_norm=0.5), make_optimizer(3e-3, 0, 10)]


def test_the_update_is_the_sum_of_each_terms_own_optimizer_over_several_steps():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    optimizer, (first, second) = per_term_optimizer(_optimizers()), _optimizers()
    state, state_1, state_2 = optimizer.init(params), first.init(params), second.init(params)
    rng = np.random.default_rng(0)
    for _ in range(3):
        # Term 1's gradients are 100x term 0's: alone in one Adam they would set its scale.
        grads = {k: jnp.asarray(rng.normal(size=(2, *v.shape)) * np.array([1.0, 100.0]).reshape(
            (2,) + (1,) * v.ndim), jnp.float32) for k, v in params.items()}
        updates, state = optimizer.update(grads, state, params)
        u1, state_1 = first.update(jax.tree.map(lambda g: g[0], grads), state_1, params)
        u2, state_2 = second.update(jax.tree.map(lambda g: g[1], grads), state_2, params)
        jax.tree.map(lambda u, a, b: np.testing.assert_allclose(u, a + b, rtol=1e-6, atol=1e-9),
                     updates, u1, u2)
        assert max(float(jnp.abs(u).max()) for u in jax.tree.leaves(u1)) > 1e-4


def test_gradients_without_one_slice_per_term_and_a_single_optimizer_are_refused():
    params = {"w": jnp.ones((2, 3))}
    optimizer = per_term_optimizer(_optimizers())
    with pytest.raises(ValueError, match=r"of 2 terms got gradients with leading axes \[3\]"):
        optimizer.update({"w": jnp.ones((3, 2, 3))}, optimizer.init(params), params)
    with pytest.raises(ValueError, match="needs at least 2 optimizers, got 1"):
        per_term_optimizer(_optimizers()[:1])


def test_make_update_differentiates_each_term_and_refuses_clashing_metrics():
    history, mask, target_codes = batch(seed=0, size=4)
    data = {"history": history, "history_mask": mask, "target": target_codes}

    def term(t, metric="m"):
        def loss_fn(model, batch, rng):
            del rng
            logits = model.sequence_logits(
                model.encode(batch["history"], batch["history_mask"]), batch["target"][:, None])
            value = logits.mean() if t == 0 else (logits ** 2).mean()
            return value, {f"{metric}{t}": value}
        return loss_fn

    # Plain SGD per term, so the update is linear in each term's gradient (Adam's first step is
    # near sign(g) and would magnify round-off where a gradient is near 0).
    def sgds():
        return [optax.inject_hyperparams(optax.sgd)(learning_rate=lr) for lr in (0.1, 0.01)]

    model = tiny("encoder_decoder", "item")
    optimizer = per_term_optimizer(sgds())
    graphdef, state, _ = create_train_state(model, optimizer, jax.random.key(0), make_mesh())
    new_state, metrics = jax.jit(make_update(graphdef, (term(0), term(1)), optimizer))(
        state, data)
    assert metrics["skipped"] == 0 and float(metrics["learning_rate"]) == pytest.approx(0.1)
    assert float(metrics["loss"]) == pytest.approx(float(metrics["m0"] + metrics["m1"]))

    # The same update from each term's own gradient through each term's own optimizer.
    def term_grad(t):  # jitted: the model's backward pass op by op takes a minute on a CPU
        def loss(params):
            return term(t)(nnx.merge(graphdef, params, state.model_state), data, None)[0]
        return jax.jit(jax.grad(loss))(state.params)

    want = state.params
    for t, opt in enumerate(sgds()):
        updates, _ = opt.update(term_grad(t), opt.init(state.params), state.params)
        want = jax.tree.map(lambda p, u: p + u, want, updates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 new_state.params, want)
    clashing = (term(0), lambda model, batch, rng: (term(1)(model, batch, rng)[0],
                                                     {"m0": jnp.zeros(())}))
    with pytest.raises(ValueError, match=r"aux metrics \['m0'\] clash"):  # when traced
        jax.eval_shape(make_update(graphdef, clashing, optimizer), state, data)
