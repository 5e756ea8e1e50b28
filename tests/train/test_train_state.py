"""The train state and jitted step: learning, the schedule, skipped non-finite updates, 8 devices.

The tiny model and loss here are shared with the checkpointing tests.
"""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.train.train_state import (
    create_train_state,
    learning_rate_schedule,
    make_optimizer,
    make_train_step,
)
from tests.fake_devices import run_on_fake_devices

NUM_ITEMS, HISTORY = 103, 4


class TinyMLP(nnx.Module):
    """Averages the history's item embeddings and scores every item through one hidden layer.

    hidden.kernel is 64 x 256 = 2**14 elements, so an fsdp axis splits it; the rest is
    replicated. BatchNorm gives the model non-parameter state that the forward updates.
    """

    def __init__(self, seed: int, dim: int = 64, hidden: int = 256):
        rngs = nnx.Rngs(seed)
        self.embed = nnx.Embed(NUM_ITEMS, dim, rngs=rngs)
        self.hidden = nnx.Linear(dim, hidden, rngs=rngs)
        self.norm = nnx.BatchNorm(dim, rngs=rngs)
        self.dropout = nnx.Dropout(0.1)
        self.out = nnx.Linear(hidden, NUM_ITEMS, rngs=rngs)

    def __call__(self, history_bh: jax.Array, mask_bh: jax.Array, rng: jax.Array) -> jax.Array:
        e_bhd = self.embed(jnp.maximum(history_bh, 0)) * mask_bh[..., None]
        x_bd = e_bhd.sum(1) / jnp.maximum(mask_bh.sum(1, keepdims=True), 1)
        # Normalising before a layer with a bias (not after it) leaves no parameter whose true
        # gradient is zero: Adam would turn that gradient's rounding noise into full-size steps.
        h = self.dropout(nnx.relu(self.hidden(self.norm(x_bd))), rngs=rng)
        return self.out(h)


def loss_fn(model: TinyMLP, batch, rng):
    """Next-item cross-entropy, weighted per example when the batch has `weight`."""
    logits = model(batch["history"], batch["history_mask"], rng)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["target"])
    weight = batch.get("weight", jnp.ones_like(ce))
    accuracy = (logits.argmax(-1) == batch["target"]).mean()
    return (weight * ce).mean(), {"accuracy": accuracy}


def random_batch(seed: int, size: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    history = rng.integers(0, NUM_ITEMS, (size, HISTORY)).astype(np.int32)
    history[:, 0] = np.where(rng.random(size) < 0.5, -1, history[:, 0])  # some padding
    return {
        "history": history,
        "history_mask": history >= 0,
        "target": rng.integers(0, NUM_ITEMS, size).astype(np.int32),
        "weight": np.ones(size, np.float32),
    }


def setup(mesh=None, *, seed: int = 0, **optimizer_args):
    """(fresh_state, train_step) for TinyMLP on `mesh` (default: all devices, data parallel).

    fresh_state() builds a new initial state each call, so tests can share one compiled step.
    """
    mesh = mesh or make_mesh()
    args = {"lr": 1e-2, "warmup_steps": 2, "total_steps": 50, "weight_decay": 0.01,
            "clip_norm": 1.0, **optimizer_args}
    optimizer = make_optimizer(**args)

    def fresh_state():
        return create_train_state(TinyMLP(seed), optimizer, jax.random.key(seed + 1), mesh)

    graphdef, _, sharding = fresh_state()
    return (lambda: fresh_state()[1]), make_train_step(graphdef, loss_fn, optimizer, mesh, sharding)


@pytest.fixture(scope="module")
def trainer():
    return setup()


def _host_array(x):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def host(tree):
    """A host copy (the step donates its input state); PRNG keys as their raw data."""
    return jax.tree.map(_host_array, jax.device_get(tree))


def assert_trees_equal(a, b):
    jax.tree.map(np.testing.assert_array_equal, host(a), host(b))




def test_training_reduces_the_loss_and_reports_step_metrics(trainer):
    fresh_state, train_step = trainer
    state = fresh_state()
    batch = random_batch(0)
    losses, learning_rates = [], []
    for _ in range(20):
        state, metrics = train_step(state, batch)
        losses.append(float(metrics["loss"]))
        learning_rates.append(float(metrics["learning_rate"]))
    assert losses[-1] < 0.25 * losses[0]
    assert set(metrics) == {
        "loss", "accuracy", "grad_norm", "learning_rate", "skipped", "nonfinite_steps"
    }
    assert int(state.step) == 20 and int(metrics["nonfinite_steps"]) == 0
    assert float(metrics["accuracy"]) > 0.9
    # BatchNorm statistics moved away from their initial values.
    assert not np.allclose(np.asarray(state.model_state["norm"]["mean"][...]), 0.0)
    # The reported rate is the one the update used: warmup over 2 steps to 1e-2, then cosine.
    expected = optax.warmup_cosine_decay_schedule(0.0, 1e-2, 2, 50)(np.arange(20))
    np.testing.assert_allclose(learning_rates, expected, rtol=1e-6, atol=1e-9)
    assert learning_rates[2] == pytest.approx(1e-2)


def test_weight_decay_skips_vectors():
    """With zero gradients AdamW only decays: kernels shrink by (1 - lr * wd), biases stay."""
    mesh = make_mesh()
    optimizer = make_optimizer(lr=0.1, warmup_steps=0, total_steps=10, weight_decay=0.5)
    graphdef, state, sharding = create_train_state(TinyMLP(0), optimizer, jax.random.key(0), mesh)

    def zero_loss(model, batch, rng):
        return 0.0 * loss_fn(model, batch, rng)[0], {}

    before = host(state.params)
    state, _ = make_train_step(graphdef, zero_loss, optimizer, mesh, sharding)(
        state, random_batch(0)
    )
    after = host(state.params)
    np.testing.assert_allclose(after["hidden"]["kernel"], before["hidden"]["kernel"] * 0.95,
                               rtol=1e-6)
    np.testing.assert_array_equal(after["hidden"]["bias"], before["hidden"]["bias"])
    np.testing.assert_array_equal(after["norm"]["scale"], before["norm"]["scale"])


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_loss_skips_the_update(trainer, bad):
    fresh_state, train_step = trainer
    state, _ = train_step(fresh_state(), random_batch(0))
    before = host(state)
    batch = random_batch(1)
    batch["weight"][3] = bad
    state, metrics = train_step(state, batch)
    assert int(metrics["skipped"]) == 1 and int(metrics["nonfinite_steps"]) == 1
    assert not np.isfinite(float(metrics["loss"]))
    assert_trees_equal(state.params, before.params)
    assert_trees_equal(state.opt_state, before.opt_state)
    assert_trees_equal(state.model_state, before.model_state)
    assert int(state.step) == 2  # one batch was consumed all the same

    state, metrics = train_step(state, random_batch(2))  # training goes on
    assert int(metrics["skipped"]) == 0 and int(state.nonfinite_steps) == 1
    assert not np.array_equal(host(state.params)["out"]["kernel"], before.params["out"]["kernel"])


def test_aux_metric_may_not_shadow_a_step_metric():
    mesh = make_mesh()
    optimizer = make_optimizer(lr=0.1, warmup_steps=0, total_steps=10)
    graphdef, state, sharding = create_train_state(TinyMLP(0), optimizer, jax.random.key(0), mesh)

    def shadowing(model, batch, rng):
        loss, _ = loss_fn(model, batch, rng)
        return loss, {"grad_norm": loss}

    with pytest.raises(ValueError, match="grad_norm"):
        make_train_step(graphdef, shadowing, optimizer, mesh, sharding)(state, random_batch(0))


@pytest.mark.parametrize(
    "args",
    [{"lr": 0.0}, {"warmup_steps": 10}, {"warmup_steps": -1}, {"weight_decay": -1.0},
     {"clip_norm": 0.0}],
)
def test_make_optimizer_rejects_bad_settings(args):
    with pytest.raises(ValueError):
        make_optimizer(**{"lr": 0.1, "warmup_steps": 1, "total_steps": 10, **args})


def test_eight_devices_match_one_device():
    """The same steps on a 1-device mesh and a 4 (data) x 2 (fsdp) mesh of 8 CPU devices."""
    out = run_on_fake_devices(8, """
        import jax, numpy as np
        from sgrec_jax.core.sharding import host_to_global, make_mesh
        from tests.train.test_train_state import host, random_batch, setup

        assert jax.device_count() == 8
        runs = {}
        for name, mesh in [("one", make_mesh(1, 1)), ("eight", make_mesh(4, 2))]:
            fresh_state, train_step = setup(mesh)
            state = fresh_state()
            losses = []
            for step in range(3):
                state, metrics = train_step(state, host_to_global(random_batch(step), mesh))
                losses.append(float(metrics["loss"]))
            kernel = state.params["hidden"]["kernel"][...]
            runs[name] = (losses, host(state.params), kernel)

        kernel = runs["eight"][2]
        assert kernel.shape == (64, 256), kernel.shape
        assert kernel.addressable_shards[0].data.shape == (64, 128)  # FSDP really split it
        assert len(runs["one"][2].sharding.device_set) == 1
        np.testing.assert_allclose(runs["eight"][0], runs["one"][0], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     runs["eight"][1], runs["one"][1])
        print("losses", runs["one"][0], runs["eight"][0])
    """)
    assert "losses" in out


@pytest.mark.parametrize("final_lr_fraction", [0.0, 0.1])
def test_the_schedule_without_warmup_is_the_warmup_schedule_with_zero_steps(
    final_lr_fraction, caplog
):
    """Same values as optax's warmup schedule with 0 steps, without its 'non-positive
    transition_steps' log line in every run that has no warmup (SASRec's)."""
    steps = np.arange(0, 12)
    with caplog.at_level("INFO"):
        got = learning_rate_schedule(0.1, 0, 10, final_lr_fraction)(steps)
        assert "non-positive" not in caplog.text
        want = optax.warmup_cosine_decay_schedule(0.0, 0.1, 0, 10, 0.1 * final_lr_fraction)(steps)
        assert "non-positive" in caplog.text
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert float(got[0]) == pytest.approx(0.1)
    assert float(got[-1]) == pytest.approx(0.1 * final_lr_fraction)
    warm = learning_rate_schedule(0.1, 2, 10)(steps)
    np.testing.assert_allclose(warm, optax.warmup_cosine_decay_schedule(0.0, 0.1, 2, 10)(steps))
