"""Beam search end to end with the real SID generator (the other decoding tests use toy models)."""

import jax
import numpy as np
from flax import nnx

from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.decoding.logprob import sequence_logprob
from sgrec_jax.models.registry import build_model
from tests.decoding.toy import histories, tiny_sids

SIDS = tiny_sids()
B, H, BEAM = 3, 5, 6


@nnx.jit
def _score(model, catalog, history_bh, mask_bh, codes_bkl):
    return sequence_logprob(model, model.encode(history_bh, mask_bh), codes_bkl, catalog)


def test_beam_search_with_the_encoder_decoder():
    catalog = jax.device_put(SIDS.catalog())
    generator = build_model(
        "encoder_decoder", codes_nl=SIDS.codes_nl, level_sizes=SIDS.level_sizes, max_history=H,
        rngs=nnx.Rngs(0), num_layers=1, d_model=16, num_heads=2, d_ff=32,
    )
    requests = histories(B, SIDS.codes_nl.shape[0], length=H)
    result = constrained_beam_search_jit(generator, catalog, *requests, beam_size=BEAM)
    items, codes = np.asarray(result.items_bk), np.asarray(result.codes_bkl)
    assert items.shape == (B, BEAM) and result.argmax_invalid_b.shape == (B,)
    assert (items >= 0).all() and all(len(set(row)) == BEAM for row in items.tolist())
    np.testing.assert_array_equal(codes, SIDS.codes_nl[items])
    assert (np.diff(np.asarray(result.logprob_bk), axis=1) <= 0).all()
    # Beam scores (incremental decode_logits) equal the shared scorer (teacher-forced logits).
    scored = _score(generator, catalog, *requests, result.codes_bkl)
    np.testing.assert_allclose(result.logprob_bk, scored.logprob_bk, atol=1e-4)


def test_bfloat16_generator_decodes_with_float32_log_probs():
    """Under a bfloat16 compute dtype the beam search's log-probs (and the scorer's) stay
    float32 and close to the float32 model's for the same parameters and SIDs."""
    catalog = jax.device_put(SIDS.catalog())
    models = {
        dtype: build_model(
            "encoder_decoder", codes_nl=SIDS.codes_nl, level_sizes=SIDS.level_sizes,
            max_history=H, rngs=nnx.Rngs(0), num_layers=1, d_model=16, num_heads=2, d_ff=32,
            dtype=dtype,
        )
        for dtype in ("float32", "bfloat16")
    }
    requests = histories(B, SIDS.codes_nl.shape[0], length=H)
    result = constrained_beam_search_jit(models["bfloat16"], catalog, *requests, beam_size=BEAM)
    assert result.logprob_bk.dtype == jax.numpy.float32
    assert (np.diff(np.asarray(result.logprob_bk), axis=1) <= 0).all()
    scored = {dtype: _score(m, catalog, *requests, result.codes_bkl) for dtype, m in models.items()}
    assert scored["bfloat16"].logprob_bk.dtype == jax.numpy.float32
    assert scored["bfloat16"].token_logprob_bkl.dtype == jax.numpy.float32
    np.testing.assert_allclose(result.logprob_bk, scored["bfloat16"].logprob_bk, atol=2e-2)
    np.testing.assert_allclose(scored["bfloat16"].logprob_bk, scored["float32"].logprob_bk,
                               atol=5e-2)
