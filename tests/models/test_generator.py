"""The generator interface, for every variant x history encoding.

Each model is compiled once: `probe` runs teacher forcing on one batch that stacks every
perturbed copy of the base requests, plus sequence_logits and decode_logits on the base
requests; the tests then compare slices of its outputs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.models.generator import SidCodes
from sgrec_jax.models.layers import NEG_INF, causal_mask
from tests.models.tiny import (
    CODES,
    NUM_ITEMS,
    SIZE_OPTIONS,
    SIZES,
    VARIANTS,
    L,
    V,
    batch,
    forward,
    tiny,
    tiny_with_memory,
)

B, K = 3, 4
JUNK = -123  # codes beyond a prefix's level: must be ignored


def perturbed_requests():
    """Row blocks of B requests each, stacked: base | padded slots changed | one real history
    item changed (request 0) | target codes >= l changed, for l = 0..L-1 | the K candidates of
    each request as separate requests."""
    history, mask, target = (np.asarray(x) for x in batch())
    cands_bkl = CODES[np.random.default_rng(2).integers(0, NUM_ITEMS, (B, K))]
    junk_pads = np.where(mask, history, 7)
    changed = history.copy()
    changed[0, -1] = (changed[0, -1] + 1) % NUM_ITEMS
    later = [np.where(np.arange(L) >= l, (target + 1) % np.array(SIZES), target) for l in range(L)]
    rows = [history, junk_pads, changed] + [history] * L + [np.repeat(history, K, 0)]
    masks = [mask] * (3 + L) + [np.repeat(mask, K, 0)]
    targets = [target] * 3 + later + [cands_bkl.reshape(B * K, L)]
    stacked = (np.concatenate(x) for x in (rows, masks, targets))
    return *(jnp.asarray(x) for x in stacked), jnp.asarray(cands_bkl)


@nnx.jit
def probe(m, history, mask, target, cands_bkl):
    memory = m.encode(history[:B], mask[:B])
    return dict(
        forward=m(history, mask, target, deterministic=True),
        short=m(history[:B, 2:], mask[:B, 2:], target[:B], deterministic=True),
        score=m.sequence_logits(memory, cands_bkl),
        steps=[m.decode_logits(memory, cands_bkl, level) for level in range(L)],
        junk_steps=[
            m.decode_logits(memory, cands_bkl.at[..., level:].set(JUNK), level)
            for level in range(L)
        ],
    )


# Each variant with a transition memory too (its tokens follow the history tokens), with its
# copy head, and with a copy head whose gate also reads the pointer's context (its zero-initialised
# weights drawn at random here, so the context path counts), and the encoder-decoder with its
# memory tokens appended after the encoder (transition_memory_placement "cross_attention"), and
# the decoder-only model with the copy head's count prior.
WITH_MEMORY = [(m, "item", kind) for m in sorted({m for m, _ in VARIANTS})
               for kind in ("memory", "copy", "copy_context")]
WITH_MEMORY += [("encoder_decoder", "item", "copy_cross"), ("decoder_only", "item", "copy_prior")]


@pytest.fixture(scope="module", params=VARIANTS + WITH_MEMORY,
                ids=["-".join(v) for v in VARIANTS + WITH_MEMORY])
def model(request):
    kind = request.param[-1]
    if kind in ("memory", "copy", "copy_context", "copy_cross", "copy_prior"):
        model = tiny_with_memory(
            *request.param[:2], transition_memory_copy=kind != "memory",
            transition_memory_copy_gate="context" if kind == "copy_context" else "state",
            transition_memory_placement="cross_attention" if kind == "copy_cross" else "encoder",
            transition_memory_copy_prior=kind == "copy_prior")
        if kind == "copy_context":
            kernel = model.copy_head.gate_context.kernel
            kernel[...] = jax.random.normal(jax.random.key(7), kernel[...].shape)
        return model
    return tiny(*request.param)


@pytest.fixture(scope="module")
def out(model):
    """probe's outputs as numpy; forward's [n, L, V] split into its blocks of B requests."""
    history, mask, target, cands_bkl = perturbed_requests()
    result = jax.tree.map(np.asarray, probe(model, history, mask, target, cands_bkl))
    blocks = np.split(result["forward"][: (3 + L) * B], 3 + L)
    result.update(base=blocks[0], junk_pads=blocks[1], changed=blocks[2], later=blocks[3:])
    result["tiled"] = result["forward"][(3 + L) * B :].reshape(B, K, L, V)
    return result


def test_shapes_dtypes_and_padded_logits(out):
    assert out["forward"].dtype == np.float32 and out["base"].shape == (B, L, V)
    assert out["score"].shape == (B, K, L, V)
    assert all(s.shape == (B, K, V) and s.dtype == np.float32 for s in out["steps"])
    assert np.isfinite(out["forward"]).all()
    for level, size in enumerate(SIZES):
        np.testing.assert_array_equal(out["forward"][:, level, size:], NEG_INF)
        assert (out["forward"][:, level, :size] > NEG_INF / 2).all()
        np.testing.assert_array_equal(out["steps"][level][..., size:], NEG_INF)


def test_padded_history_slots_are_ignored(out):
    np.testing.assert_allclose(out["junk_pads"], out["base"], rtol=0, atol=1e-6)


def test_left_padding_is_invisible(out):
    """Requests 0 and 2 have >= 2 padded slots: dropping two of them changes nothing."""
    np.testing.assert_allclose(out["short"][[0, 2]], out["base"][[0, 2]], atol=1e-5)


def test_a_real_history_item_changes_only_its_own_request(out):
    moved = np.abs(out["changed"] - out["base"]).max(axis=(1, 2))
    assert moved[0] > 1e-3
    np.testing.assert_allclose(moved[1:], 0, atol=1e-6)


def test_level_logits_do_not_see_target_codes_from_that_level_on(out):
    for level, logits in enumerate(out["later"]):
        np.testing.assert_allclose(
            logits[:, : level + 1], out["base"][:, : level + 1], rtol=0, atol=1e-6
        )
        if level + 1 < L:  # ... while the next level does see code `level`
            assert np.abs(logits[:, level + 1] - out["base"][:, level + 1]).max() > 1e-3


def test_decode_logits_equal_teacher_forced_logits(out):
    for level in range(L):
        np.testing.assert_allclose(out["steps"][level], out["score"][:, :, level], atol=1e-5)


def test_decode_logits_ignore_codes_beyond_the_level(out):
    for level in range(L):
        np.testing.assert_allclose(out["junk_steps"][level], out["steps"][level], atol=1e-6)


def test_k_candidates_on_one_encoding_equal_tiled_requests(out):
    np.testing.assert_allclose(out["score"], out["tiled"], atol=1e-5)


def test_sid_table_is_state_but_not_a_parameter(model):
    assert not any(x.dtype == jnp.int32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    np.testing.assert_array_equal(jax.tree.leaves(nnx.state(model, SidCodes))[0], CODES)


def test_decode_logits_rejects_a_level_outside_the_sid(model):
    history, mask, target = batch()
    memory = jax.eval_shape(lambda: model.encode(history, mask))
    with pytest.raises(ValueError, match="level must be in 0..3"):
        model.decode_logits(memory, target[:, None], L)


@nnx.jit
def one_causal_pass(m, history, mask, target):
    """Decoder-only logits from one causal pass over [history tokens; BOS; codes < L-1]."""
    items = jnp.where(mask, history, 0)
    x_hist, mask_hist = m.history(m.tokens(m.item_codes(items)), items, mask)
    bos = jnp.broadcast_to(m.tokens.bos(), (len(history), 1, SIZE_OPTIONS["d_model"]))
    x_tgt = jnp.concatenate([bos, m.tokens(target[:, :-1])], 1) + m.target_positions(jnp.arange(L))
    x = jnp.concatenate([x_hist, x_tgt], 1)[:, None]
    keys_real = jnp.concatenate([mask_hist, jnp.ones((len(history), L), bool)], 1)
    attn_mask = causal_mask(x.shape[2]) & keys_real[:, None, None, :]
    for block in m.blocks:
        x, _ = block(x, attn_mask, deterministic=True)
    return m.head.all_levels(m.final_norm(x[:, 0, -L:]))


def test_decoder_only_cache_equals_one_pass_over_the_concatenation():
    m = tiny("decoder_only", "code")
    history, mask, target = batch()
    assert len(m.blocks) > 1  # the cache of a later layer is what could go wrong
    np.testing.assert_allclose(
        forward(m, history, mask, target), one_causal_pass(m, history, mask, target), atol=1e-5
    )
