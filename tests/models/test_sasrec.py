import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.models.sasrec import NO_ITEM_LOGIT, SASRec, ce_loss, top_k

N, H, D = 30, 6, 16


def tiny(norm_first: bool = False, dropout: float = 0.2, num_layers: int = 2,
         dtype: str = "float32") -> SASRec:
    return SASRec(
        N, H, d_model=D, num_layers=num_layers, num_heads=2, d_ff=32, dropout=dropout,
        attention_dropout=dropout, norm_first=norm_first, dtype=dtype, rngs=nnx.Rngs(0),
    )


def batch_of(history: np.ndarray, target: np.ndarray | None = None) -> dict[str, jax.Array]:
    history = np.asarray(history, np.int32)
    out = {"history": jnp.asarray(history), "history_mask": jnp.asarray(history != PAD_ITEM)}
    if target is not None:
        out["target"] = jnp.asarray(target, jnp.int32)
    return out


HISTORY = np.array(
    [[-1, -1, -1, 4, 7, 9], [1, 2, 3, 4, 5, 6], [-1, -1, -1, -1, -1, 29], [-1, -1, 8, 8, 0, 3]]
)


@pytest.mark.parametrize("norm_first", [False, True])
def test_shapes_and_dtypes(norm_first):
    model = tiny(norm_first)
    b = batch_of(HISTORY)
    states = model.hidden_states(b["history"], b["history_mask"], deterministic=True)
    scores = model.scores(b["history"], b["history_mask"], deterministic=True)
    user = model.user_state(b["history"], b["history_mask"], deterministic=True)
    assert states.shape == (4, H, D) and user.shape == (4, D) and scores.shape == (4, N)
    assert scores.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(scores)))
    # Padded slots carry a zero state.
    assert bool(jnp.all(states[0, :3] == 0)) and bool(jnp.any(states[0, 3] != 0))
    assert top_k(model, b, 5).shape == (4, 5) and top_k(model, b, 5).dtype == jnp.int32


@pytest.mark.parametrize("norm_first", [False, True])
def test_pad_item_id_does_not_matter_but_real_items_do(norm_first):
    model = tiny(norm_first)
    b = batch_of(HISTORY)
    other_pad = b["history"].at[0, :3].set(jnp.array([5, 0, 29])).at[3, 0].set(11)
    key = jax.random.key(3)
    for kwargs in (dict(deterministic=True), dict(deterministic=False, rng=key)):
        base = model.scores(b["history"], b["history_mask"], **kwargs)
        padded = model.scores(other_pad, b["history_mask"], **kwargs)
        np.testing.assert_array_equal(np.asarray(base), np.asarray(padded))
    real = b["history"].at[0, 3].set(12)
    changed = model.scores(real, b["history_mask"], deterministic=True)
    base = model.scores(b["history"], b["history_mask"], deterministic=True)
    assert not np.allclose(changed[0], base[0]) and np.allclose(changed[1:], base[1:])


@pytest.mark.parametrize("norm_first", [False, True])
def test_causal_and_user_state_is_the_last_slot(norm_first):
    model = tiny(norm_first)
    b = batch_of(HISTORY)
    states = model.hidden_states(b["history"], b["history_mask"], deterministic=True)
    user = model.user_state(b["history"], b["history_mask"], deterministic=True)
    np.testing.assert_array_equal(np.asarray(user), np.asarray(states[:, -1]))
    for t in (3, 5):  # Changing slot t changes slots >= t only.
        changed = model.hidden_states(
            b["history"].at[1, t].set(20), b["history_mask"], deterministic=True
        )
        np.testing.assert_allclose(changed[1, :t], states[1, :t], rtol=1e-6, atol=1e-6)
        assert not np.allclose(changed[1, t:], states[1, t:])


def test_scores_click_logits_and_top_k_agree():
    model = tiny()
    b = batch_of(HISTORY)
    scores = np.asarray(model.scores(b["history"], b["history_mask"], deterministic=True))
    ranked = np.asarray(top_k(model, b, 7))
    np.testing.assert_array_equal(ranked, np.argsort(-scores, axis=1, kind="stable")[:, :7])
    user = model.user_state(b["history"], b["history_mask"], deterministic=True)
    items = np.array([[0, 5, PAD_ITEM], [29, 29, 1], [3, PAD_ITEM, 2], [7, 8, 9]])
    clicks = np.asarray(model.click_logits(user, jnp.asarray(items)))
    real = items != PAD_ITEM
    gathered = np.take_along_axis(scores, np.where(real, items, 0), axis=1)
    np.testing.assert_allclose(clicks[real], gathered[real], rtol=1e-5, atol=1e-6)
    assert np.all(clicks[~real] == NO_ITEM_LOGIT)


def test_ce_loss_dropout_and_valid_rows():
    model = tiny()
    b = batch_of(HISTORY, target=[9, 7, 0, 3])
    scores = model.scores(b["history"], b["history_mask"], deterministic=True)
    per_row = optax.softmax_cross_entropy_with_integer_labels(scores, b["target"])
    np.testing.assert_allclose(ce_loss(model, b, None), per_row.mean(), rtol=1e-6)
    # Dropout on: deterministic per key, different across keys.
    a1, a2 = ce_loss(model, b, jax.random.key(1)), ce_loss(model, b, jax.random.key(1))
    assert a1 == a2 and a1 != ce_loss(model, b, jax.random.key(2))
    masked = dict(b, valid=jnp.array([True, False, True, False]))
    np.testing.assert_allclose(ce_loss(model, masked, None), per_row[::2].mean(), rtol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
def test_bfloat16_compute_keeps_float32_params_scores_and_loss(norm_first):
    f32, bf16 = tiny(norm_first), tiny(norm_first, dtype="bfloat16")
    params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
    assert {p.dtype for p in params} == {jnp.dtype("float32")}
    b = batch_of(HISTORY, target=[9, 7, 0, 3])
    states = bf16.hidden_states(b["history"], b["history_mask"], deterministic=True)
    assert states.dtype == jnp.bfloat16  # the blocks really ran in bfloat16
    scores = bf16.scores(b["history"], b["history_mask"], deterministic=True)
    assert scores.dtype == jnp.float32
    expected = f32.scores(b["history"], b["history_mask"], deterministic=True)
    np.testing.assert_allclose(scores, expected, atol=0.05 * np.abs(expected).max())
    loss, grads = nnx.value_and_grad(ce_loss)(bf16, b, None)
    assert loss.dtype == jnp.float32
    assert {g.dtype for g in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
    np.testing.assert_allclose(loss, ce_loss(f32, b, None), rtol=1e-2)
    user = bf16.user_state(b["history"], b["history_mask"], deterministic=True)
    assert bf16.click_logits(user, jnp.array([[9, PAD_ITEM]] * 4)).dtype == jnp.float32
    with pytest.raises(ValueError, match="floating dtype"):
        tiny(dtype="int32")


def test_argument_errors():
    model = tiny()
    b = batch_of(HISTORY)
    with pytest.raises(ValueError, match="needs an rng key"):
        model.scores(b["history"], b["history_mask"], deterministic=False)
    with pytest.raises(ValueError, match="history has 5 slots"):
        model.scores(b["history"][:, 1:], b["history_mask"][:, 1:], deterministic=True)
    with pytest.raises(ValueError, match="not divisible"):
        SASRec(N, H, d_model=10, num_heads=3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="dropout must be in"):
        SASRec(N, H, dropout=1.0, rngs=nnx.Rngs(0))


@functools.partial(jax.jit, static_argnums=0)
def _train_step(graphdef, state, batch, key):
    model, optimizer = nnx.merge(graphdef, state)
    loss, grads = nnx.value_and_grad(ce_loss)(model, batch, key)
    optimizer.update(model, grads)
    return nnx.state((model, optimizer)), loss


def test_tiny_model_overfits_a_fixed_batch():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, H + 1, 16)
    history = np.full((16, H), PAD_ITEM)
    for row, n in enumerate(lengths):
        history[row, H - n :] = rng.choice(N, n, replace=False)
    b = batch_of(history, target=rng.integers(0, N, 16))
    model = tiny(dropout=0.1, num_layers=1)  # One block: quicker to compile.
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    losses = []
    for step in range(60):
        state, loss = _train_step(graphdef, state, b, jax.random.key(step))
        losses.append(float(loss))
    # Starts near log(N) = 3.4 (near-uniform init), ends near zero (memorised 16 examples).
    assert losses[0] > 3.0 and max(losses[-5:]) < 0.5, losses
