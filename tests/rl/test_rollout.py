"""Rollouts (beam and sampling) and the group scorer shared by pi, pi_old and pi_ref."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.models.registry import build_model
from sgrec_jax.rl.rollout import Group, generate, in_group_b, score_group, with_target
from tests.decoding.toy import SIDS, B, HashModel, N, histories

G = 6


@dataclasses.dataclass(frozen=True)
class Recording:
    """A HashModel that records the leading shapes it is called with."""

    model: HashModel
    calls: list

    def encode(self, history_bh, history_mask_bh, *, deterministic=True, leave_out_b=None):
        self.calls.append(("encode", history_bh.shape))
        return self.model.encode(history_bh, history_mask_bh, deterministic=deterministic)

    def sequence_logits(self, memory, codes_bkl):
        self.calls.append(("sequence_logits", codes_bkl.shape))
        return self.model.sequence_logits(memory, codes_bkl)


@pytest.mark.parametrize("mode", ["beam", "sample"])
def test_groups_are_catalog_items_scored_like_the_decoder(catalog, model, requests, mode):
    run = jax.jit(generate, static_argnames=("mode", "group_size", "temperature"))
    group = run(model, catalog, *requests, jax.random.key(3), mode=mode, group_size=G,
                temperature=1.5)
    items, codes = np.asarray(group.items_bg), np.asarray(group.codes_bgl)
    assert items.shape == (B, G) and codes.shape == (B, G, SIDS.num_levels)
    assert ((items >= 0) & (items < N)).all()
    np.testing.assert_array_equal(codes, SIDS.codes_nl[items])
    if mode == "beam":  # G distinct items, the beam search's own
        assert all(len(set(row)) == G for row in items.tolist())
        beam = constrained_beam_search_jit(model, catalog, *requests, beam_size=G)
        np.testing.assert_array_equal(items, beam.items_bk)
        score = jax.jit(score_group)(model, catalog, *requests, group.codes_bgl)
        np.testing.assert_allclose(score.logprob_bg, beam.logprob_bk, atol=1e-4)
    else:  # the same key gives the same group, another key another one
        again = run(model, catalog, *requests, jax.random.key(3), mode=mode, group_size=G,
                    temperature=1.5)
        np.testing.assert_array_equal(items, again.items_bg)
        other = run(model, catalog, *requests, jax.random.key(4), mode=mode, group_size=G,
                    temperature=1.5)
        assert not np.array_equal(items, other.items_bg)


def test_unknown_mode_fails(catalog, model, requests):
    with pytest.raises(ValueError, match="'greedy' is not one of beam, sample"):
        generate(model, catalog, *requests, jax.random.key(0), mode="greedy", group_size=G,
                 temperature=1.0)


def test_with_target_replaces_the_last_candidate_only_where_the_target_is_missing():
    """Hand-built groups, G = 3, L = 2: request 0 holds its target (unchanged), request 1 misses
    it (its last candidate becomes the target), request 2 misses it behind a padded slot."""
    items = np.array([[4, 7, 9], [1, 2, 3], [5, 6, -1]], np.int32)
    codes = np.stack([items, items + 100], axis=-1).astype(np.int32)  # [B, G, L]
    target = np.array([7, 8, 0], np.int32)
    target_codes = np.array([[70, 71], [80, 81], [0, 1]], np.int32)
    np.testing.assert_array_equal(in_group_b(items, target), [True, False, False])
    out = jax.jit(with_target)(Group(items, codes), target, target_codes)
    np.testing.assert_array_equal(out.items_bg, [[4, 7, 9], [1, 2, 8], [5, 6, 0]])
    want = codes.copy()
    want[1, 2], want[2, 2] = [80, 81], [0, 1]
    np.testing.assert_array_equal(out.codes_bgl, want)
    assert out.codes_bgl.dtype == codes.dtype
    assert np.asarray(in_group_b(out.items_bg, target)).all()


def test_score_group_encodes_each_request_once(catalog, model, requests):
    codes_bgl = jax.numpy.asarray(SIDS.codes_nl[np.arange(B * G).reshape(B, G) % N])
    recording = Recording(model, [])
    score = jax.jit(lambda *args: score_group(recording, *args))(catalog, *requests, codes_bgl)
    assert recording.calls == [("encode", (B, 5)), ("sequence_logits", (B, G, SIDS.num_levels))]
    assert score.token_logprob_bgl.shape == score.entropy_bgl.shape == (B, G, SIDS.num_levels)
    assert (np.asarray(score.entropy_bgl) >= 0).all()
    np.testing.assert_allclose(score.logprob_bg, score.token_logprob_bgl.sum(-1))


def test_group_scores_of_the_real_generator_equal_one_candidate_at_a_time(catalog):
    generator = nnx.jit(lambda: build_model(  # one compile instead of one per initializer
        "encoder_decoder", codes_nl=SIDS.codes_nl, level_sizes=SIDS.level_sizes, max_history=5,
        rngs=nnx.Rngs(0), num_layers=1, d_model=16, num_heads=2, d_ff=32,
    ))()
    requests = histories(B, N)
    codes_bgl = jax.numpy.asarray(SIDS.codes_nl[np.arange(B * G).reshape(B, G) % N])
    score = nnx.jit(score_group)(generator, catalog, *requests, codes_bgl)
    # Each candidate as its own request, with the history repeated.
    history_nh, mask_nh = (np.repeat(np.asarray(x), G, axis=0) for x in requests)
    alone = nnx.jit(score_group)(generator, catalog, history_nh, mask_nh,
                                 codes_bgl.reshape(B * G, 1, -1))
    np.testing.assert_allclose(score.token_logprob_bgl.reshape(B * G, 1, -1),
                               alone.token_logprob_bgl, atol=1e-5)
