"""Every variant x history encoding learns: adam + cross-entropy overfits a tiny fixed batch."""

import numpy as np
import optax
import pytest
from flax import nnx

from tests.models.tiny import VARIANTS, batch, tiny


@nnx.jit
def train_step(m, optimizer, history, mask, target):
    def loss_fn(m):
        logits_blv = m(history, mask, target, deterministic=False)
        return optax.softmax_cross_entropy_with_integer_labels(logits_blv, target).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(m)
    optimizer.update(m, grads)
    return loss


@pytest.mark.parametrize("variant, encoding", VARIANTS)
def test_overfits_a_tiny_batch(variant, encoding):
    m = tiny(variant, encoding, num_layers=1, dropout=0.1)
    optimizer = nnx.Optimizer(m, optax.adam(1e-2), wrt=nnx.Param)
    history, mask, target = batch(size=8)
    losses = [float(train_step(m, optimizer, history, mask, target)) for _ in range(40)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.2 * losses[0], losses  # it reaches 0.03-0.07x in practice


@pytest.mark.parametrize("item_id_embedding", [False, True])
def test_length_bucketed_batches_give_the_padded_per_example_loss(item_id_embedding):
    """A batch the pipeline cut to its bucket width scores every example exactly as the same
    rows at the full history width (histories are right-aligned; positions count from the
    target), so bucketing changes which examples share a batch, never their loss."""
    import jax.numpy as jnp

    from sgrec_jax.data.pipeline import train_iterator
    from sgrec_jax.data.split import PAD_ITEM, Examples
    from tests.models.tiny import CODES, NUM_ITEMS, H

    rng = np.random.default_rng(0)
    n = 48
    history = rng.integers(0, NUM_ITEMS, (n, H)).astype(np.int32)
    lengths = rng.integers(1, H + 1, n)
    history[np.arange(H)[None] < (H - lengths)[:, None]] = PAD_ITEM
    examples = Examples(history, rng.integers(0, NUM_ITEMS, n).astype(np.int32),
                        np.arange(n, dtype=np.int32))
    m = tiny("encoder_decoder", "item", item_id_embedding=item_id_embedding)

    @nnx.jit
    def nll(m, history, mask, target_codes):
        logits = m(jnp.where(mask, history, 0), mask, target_codes, deterministic=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, target_codes).sum(-1)

    widths = set()
    for b in train_iterator(examples, batch_size=8, seed=0, num_epochs=1, length_buckets=(2, 3),
                            shard_index=0, shard_count=1, drop_remainder=False):
        rows = b["user"]  # the row number of each example
        widths.add(b["history"].shape[1])
        full = examples.history[rows]
        codes = CODES[b["target"]]
        bucketed = nll(m, b["history"], b["history_mask"], codes)
        padded = nll(m, full, full != PAD_ITEM, codes)
        np.testing.assert_allclose(np.asarray(bucketed), np.asarray(padded), rtol=1e-5)
    assert widths == {2, 3, H}
