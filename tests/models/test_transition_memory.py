"""The transition memory: its table from hand-computed counts, its tokens' masks and buckets, and
leave-one-out in training (the example's own pairs, of the last two sources) equal to deleting
the example's own count from the table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.models.transition_memory import (
    NUM_COUNT_BUCKETS,
    SuccessorTable,
    count_buckets,
    share_buckets,
)
from tests.models.tiny import CODES, NUM_ITEMS, tiny


def test_top_successors_by_count_then_item_and_padded():
    # 0 -> 1 twice, 0 -> 3 twice, 0 -> 2 once; 2 -> 4 once; items 1, 3, 4 have no successors.
    counts = TransitionCounts.from_pairs(np.array([0, 0, 0, 0, 0, 2]),
                                         np.array([3, 1, 2, 3, 1, 4]), 5)
    items, n = counts.top_successors(2)
    np.testing.assert_array_equal(items, [[1, 3], [0, 0], [4, 0], [0, 0], [0, 0]])
    np.testing.assert_array_equal(n, [[2, 2], [0, 0], [1, 0], [0, 0], [0, 0]])
    items, n = counts.top_successors(4)
    np.testing.assert_array_equal(items[0], [1, 3, 2, 0])
    np.testing.assert_array_equal(n[0], [2, 2, 1, 0])
    with pytest.raises(ValueError, match="k must be >= 1"):
        counts.top_successors(0)


def test_count_buckets_are_log2_and_capped():
    got = count_buckets(jnp.array([-1, 0, 1, 2, 3, 4, 7, 8, 1 << 20]))
    np.testing.assert_array_equal(got, [0, 0, 1, 2, 2, 3, 3, 4, NUM_COUNT_BUCKETS - 1])


def test_share_buckets_are_tenths_rounded_up():
    got = share_buckets(jnp.array([0, 1, 1, 2, 5, 1]), jnp.array([4, 1, 10, 3, 10, 200]))
    np.testing.assert_array_equal(got, [0, 10, 1, 7, 5, 1])


def _model(k=2, window=2):
    """A tiny encoder-decoder (with the share features) whose memory holds: 0 -> 5 (once),
    0 -> 6 (3x); 1 -> 7 (once)."""
    model = tiny("encoder_decoder", "item", transition_memory=k, transition_memory_window=window,
                 transition_memory_share=True)
    pairs = np.array([[0, 5], [0, 6], [0, 6], [0, 6], [1, 7]])
    model.transition_memory.load(TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
    return model


def test_tokens_mask_sources_entries_and_leave_one_out():
    model = _model()
    memory = model.transition_memory
    embed = lambda items: model.tokens(model.item_codes(items)).sum(-2)  # noqa: E731
    # Rows: last item 0 after 1 | last item 0 alone (source 1 is padding) | last item 1 after 0.
    history = jnp.array([[9, 1, 0], [9, 9, 0], [9, 0, 1]])
    mask = jnp.array([[False, True, True], [False, False, True], [False, True, True]])
    # Slots: source 0 (last item) entries 0, 1, then source 1 entries 0, 1. Item 0's entries
    # are 6 (3x) then 5 (1x); item 1's are 7 (1x) and an empty one.
    _, m, items, _ = memory.tokens(history, mask, embed)
    np.testing.assert_array_equal(items, [[6, 5, 7, 0], [6, 5, 0, 0], [7, 0, 6, 5]])
    np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 1]])
    # Leaving out each row's target: 6 (count 3 -> 2, stays), 5 (count 1 -> 0, removed), 5
    # (only in source 1 of row 2, whose transition 0 -> 5 is not the example's: stays).
    x, m, _, counts = memory.tokens(history, mask, embed, leave_out_b=jnp.array([6, 5, 5]))
    np.testing.assert_array_equal(m, [[1, 1, 1, 0], [1, 0, 0, 0], [1, 0, 1, 1]])
    np.testing.assert_array_equal(counts, [[2, 1, 1, 0], [3, 0, 0, 0], [1, 0, 3, 1]])
    # Row 0's entry for 6 now carries count 2 (bucket 2), item 0's total 4 - 1 = 3 (bucket 2)
    # and the share 2 / 3 (bucket 7).
    assert memory.successors[...][0, 0] == 6
    np.testing.assert_array_equal(memory.totals[...][:2], [4, 1])
    expected = (embed(jnp.array(6)) + memory.count_embedding(jnp.array(2))
                + memory.total_embedding(jnp.array(2)) + memory.share_embedding(jnp.array(7))
                + memory.source_embedding(jnp.array(0)))
    np.testing.assert_allclose(x[0, 0], expected, atol=1e-6)
    # Source 1 loses its own pair (second-last -> last) too: history ... 0, 6 holds the training
    # pair 0 -> 6, which a test history's last pair never is. Item 0's entry for 6 drops from 3
    # to 2 (still there), its total from 4 to 3; source 0 (item 6) has no entries.
    history, mask = jnp.array([[9, 0, 6]]), jnp.array([[False, True, True]])
    _, m, items, _ = memory.tokens(history, mask, embed)
    np.testing.assert_array_equal(items, [[0, 0, 6, 5]])
    np.testing.assert_array_equal(m, [[0, 0, 1, 1]])
    x, m, _, _ = memory.tokens(history, mask, embed, leave_out_b=jnp.array([7]))
    np.testing.assert_array_equal(m, [[0, 0, 1, 1]])
    expected = (embed(jnp.array(6)) + memory.count_embedding(jnp.array(2))
                + memory.total_embedding(jnp.array(2)) + memory.share_embedding(jnp.array(7))
                + memory.source_embedding(jnp.array(1)))
    np.testing.assert_allclose(x[0, 2], expected, atol=1e-6)
    # ... and item 0's 5 keeps its count 1 (bucket 1) beside the lowered total (share 1/3: 4).
    expected = (embed(jnp.array(5)) + memory.count_embedding(jnp.array(1))
                + memory.total_embedding(jnp.array(2)) + memory.share_embedding(jnp.array(4))
                + memory.source_embedding(jnp.array(1)))
    np.testing.assert_allclose(x[0, 3], expected, atol=1e-6)


@nnx.jit
def _logits(model, history, mask, target_codes, leave_out):
    return model(history, mask, target_codes, deterministic=True, target_items_b=leave_out)


def _loaded(pairs):
    """`_model` with its table loaded from `pairs` instead."""
    model = _model()
    pairs = np.asarray(pairs)
    model.transition_memory.load(TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
    return model


def test_leaving_the_target_out_equals_deleting_its_count_from_the_table():
    # The history 3, 1, 0 is a training sequence's prefix, so its pairs 3 -> 1 and 1 -> 0 are in
    # the table (1 -> 0 ties with 1 -> 7 and comes first), and the example's target is 5.
    base = [[0, 5], [0, 6], [0, 6], [0, 6], [1, 7], [1, 0], [3, 1]]
    model = _loaded(base)
    history, mask = jnp.array([[3, 1, 0]]), jnp.array([[True, True, True]])
    codes = jnp.asarray(CODES[[5]])
    left_out = _logits(model, history, mask, codes, jnp.array([5]))
    # The same table without the example's own pairs 0 -> 5 (source 0) and 1 -> 0 (source 1):
    # inference (no leave-out) must see what training saw.
    deleted = _loaded([[0, 6], [0, 6], [0, 6], [1, 7], [3, 1]])
    np.testing.assert_allclose(left_out, _logits(deleted, history, mask, codes, None), atol=1e-5)
    # ... and the entries matter: with them, the logits differ.
    kept = _logits(model, history, mask, codes, None)
    assert np.abs(np.asarray(kept) - np.asarray(left_out)).max() > 1e-4
    # A target outside the top k (0 -> 8, once, ties with 0 -> 5 and loses on the item id)
    # leaves every source-0 entry in place and lowers only item 0's total: the table without
    # 0 -> 8 (and without 1 -> 0, as before).
    with_8 = _loaded(base + [[0, 8]])
    np.testing.assert_allclose(_logits(with_8, history, mask, codes, jnp.array([8])),
                               _logits(_loaded(base[:5] + base[6:]), history, mask, codes, None),
                               atol=1e-5)


def test_table_is_state_not_a_parameter_and_refuses_another_catalog():
    model = _model()
    assert not any(x.dtype == jnp.int32 for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    tables = jax.tree.leaves(nnx.state(model, SuccessorTable))
    assert sorted(t.shape for t in tables) == [(NUM_ITEMS,), (NUM_ITEMS, 2), (NUM_ITEMS, 2)]
    assert model.transition_memory.num_entries == 3
    with pytest.raises(ValueError, match="cover 5 items, the model's catalog 40"):
        model.transition_memory.load(
            TransitionCounts.from_pairs(np.array([0]), np.array([1]), 5))


def test_options_refuse_bad_sizes():
    with pytest.raises(ValueError, match="transition_memory must be >= 0"):
        tiny("encoder_decoder", "item", transition_memory=-1)
    with pytest.raises(ValueError, match="transition_memory_window >= 1"):
        tiny("encoder_decoder", "item", transition_memory=2, transition_memory_window=0)


def _copy_model(gate_bias: float, gate: str = "state"):
    """`_model` with a copy head whose gate is pinned open (+) or shut (-) by its bias."""
    model = tiny("encoder_decoder", "item", transition_memory=2, transition_memory_window=1,
                 transition_memory_copy=True, transition_memory_copy_gate=gate)
    pairs = np.array([[0, 5], [1, 7]])  # the last item 0 has one successor: 5
    model.transition_memory.load(TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
    model.copy_head.gate.kernel[...] = jnp.zeros_like(model.copy_head.gate.kernel[...])
    model.copy_head.gate.bias[...] = jnp.full_like(model.copy_head.gate.bias[...], gate_bias)
    return model


@nnx.jit
def _scores(model, history, mask, cands_bkl):
    memory = model.encode(history, mask)
    plain = model.head.all_levels(model.final_norm(
        model._hidden(memory, cands_bkl[..., :-1], deterministic=True)))
    return model.sequence_logits(memory, cands_bkl), jax.nn.log_softmax(plain, -1)


def test_copy_head_open_gate_copies_the_memory_item_and_shut_gate_is_the_generator():
    history, mask = jnp.array([[3, 1, 0]]), jnp.array([[True, True, True]])
    other = next(i for i in range(NUM_ITEMS) if CODES[i, 0] != CODES[5, 0])
    cands = jnp.asarray(CODES[[5, other]])[None]  # [1, 2, L]
    take = lambda logits: np.take_along_axis(  # noqa: E731
        np.asarray(logits), np.asarray(cands)[..., None], -1)[..., 0].sum(-1)

    copied, _ = _scores(_copy_model(50.0), history, mask, cands)
    item_logprob = take(copied)[0]
    np.testing.assert_allclose(item_logprob[0], 0.0, atol=1e-4)  # all mass on item 5
    assert item_logprob[1] < -50  # a first code no memory item has: nothing left for it
    # Every level stays a distribution over the level's codes.
    np.testing.assert_allclose(np.exp(np.asarray(copied)).sum(-1), 1.0, atol=1e-4)

    shut, plain = _scores(_copy_model(-50.0), history, mask, cands)
    valid = np.asarray(plain) > -1e8
    np.testing.assert_allclose(np.asarray(shut)[valid], np.asarray(plain)[valid], atol=1e-4)


def test_context_gate_starts_as_the_state_gate_and_opens_on_its_context():
    history, mask = jnp.array([[3, 1, 0]]), jnp.array([[True, True, True]])
    cands = jnp.asarray(CODES[[5]])[None]  # [1, 1, L]: the only memory item
    model = _copy_model(-50.0, gate="context")
    # Zero-initialised context weights: the gate is the state gate's (shut), the generator's.
    shut, plain = _scores(model, history, mask, cands)
    valid = np.asarray(plain) > -1e8
    np.testing.assert_allclose(np.asarray(shut)[valid], np.asarray(plain)[valid], atol=1e-4)
    # Item 5 is the only eligible memory item, so the context vector is its key: weights that
    # give that key a gate logit of +100 open the gate (-50 + 100) and copy item 5 at every level.
    key_d = np.asarray(nnx.jit(lambda m, h, k: m.encode(h, k).copy_keys_bmd)(
        model, history, mask))[0, 0]
    model.copy_head.gate_context.kernel[...] = jnp.asarray(100.0 * key_d / (key_d @ key_d))[:, None]
    copied, _ = _scores(model, history, mask, cands)
    logprob = np.take_along_axis(np.asarray(copied), np.asarray(cands)[..., None], -1)
    np.testing.assert_allclose(logprob, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="transition_memory_copy_gate must be one of"):
        tiny("encoder_decoder", "item", transition_memory=2, transition_memory_copy=True,
             transition_memory_copy_gate="attention")


def test_generator_nll_weight_adds_the_generator_parts_own_nll():
    """sft.generator_nll_weight: the loss is the mixture's NLL plus w times the NLL under the
    generator's logits alone, which equal the logits of the same model with its copy head
    removed; the SFT stage refuses the weight without a copy head."""
    from sgrec_jax.stages import sft

    model = _copy_model(0.0)
    batch = {"history": jnp.array([[3, 1, 0], [9, 2, 1]]),
             "history_mask": jnp.array([[True, True, True], [False, True, True]]),
             "target": jnp.array([5, 4])}
    rng = jax.random.key(0)
    mixed, mixed_metrics = sft.make_sft_loss()(model, batch, rng)
    weighted, metrics = sft.make_sft_loss(generator_nll_weight=0.5)(model, batch, rng)
    assert "generator_nll" not in mixed_metrics
    np.testing.assert_allclose(metrics["token_nll"], mixed_metrics["token_nll"], rtol=1e-6)

    head, model.copy_head = model.copy_head, None  # the generator part alone
    generator, _ = sft.make_sft_loss()(model, batch, rng)
    model.copy_head = head
    np.testing.assert_allclose(metrics["generator_nll"], generator, rtol=1e-6)
    np.testing.assert_allclose(weighted, mixed + 0.5 * generator, rtol=1e-6)
    assert abs(float(generator) - float(mixed)) > 1e-3, "the copy head changed nothing"

    with pytest.raises(ValueError, match="generator_nll_weight must be >= 0"):
        sft.make_sft_loss(generator_nll_weight=-1.0)
    from experiments.configs import quickstart
    config = quickstart.get_config()
    config.sft.generator_nll_weight = 1.0
    with pytest.raises(ValueError, match="needs model.options.transition_memory_copy"):
        sft._check(config)
    config.model.options.update(transition_memory=2, transition_memory_copy=True)
    sft._check(config)


def test_cross_attention_placement_keeps_the_memory_out_of_the_encoder():
    """With transition_memory_placement "cross_attention" the encoder reads the history alone:
    the decoder's keys and values of the history tokens do not depend on the table, while those
    of the appended memory tokens and the logits do; leave-one-out still equals deleting the
    example's own count; the decoder-only model refuses the placement."""
    def loaded(pairs, placement):
        model = tiny("encoder_decoder", "item", transition_memory=2, transition_memory_window=2,
                     transition_memory_placement=placement)
        pairs = np.asarray(pairs)
        model.transition_memory.load(
            TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
        return model

    base = [[0, 5], [0, 6], [0, 6], [1, 7], [1, 0], [3, 1]]
    other = [[0, 9], [0, 9], [1, 8], [3, 2]]
    history, mask = jnp.array([[3, 1, 0]]), jnp.array([[True, True, True]])
    codes = jnp.asarray(CODES[[5]])
    encode = nnx.jit(lambda m: m.encode(history, mask))
    for placement, history_keys_move in (("cross_attention", False), ("encoder", True)):
        a, b = encode(loaded(base, placement)), encode(loaded(other, placement))
        assert a.keys[0].shape[1] == 3 + 2 * 2  # the history tokens, then k x window
        moved = np.abs(np.asarray(a.keys[0][:, :3] - b.keys[0][:, :3])).max()
        assert (moved > 1e-4) == history_keys_move, placement
        assert np.abs(np.asarray(a.keys[0][:, 3:] - b.keys[0][:, 3:])).max() > 1e-4
    cross = loaded(base, "cross_attention")
    assert cross.memory_norm is not None and loaded(base, "encoder").memory_norm is None
    np.testing.assert_allclose(
        _logits(cross, history, mask, codes, jnp.array([5])),
        _logits(loaded([[0, 6], [0, 6], [1, 7], [3, 1]], "cross_attention"), history, mask,
                codes, None), atol=1e-5)
    with pytest.raises(ValueError, match="needs the encoder_decoder"):
        tiny("decoder_only", "item", transition_memory=2,
             transition_memory_placement="cross_attention")
    with pytest.raises(ValueError, match="transition_memory_placement must be one of"):
        tiny("encoder_decoder", "item", transition_memory=2, transition_memory_placement="x")


def test_copy_prior_alone_ranks_the_memory_items_as_counting_does():
    """With the decoder's scores zeroed and the gate open, the count prior's initial values give
    each memory item its counting score's share: counts weighted 1 (last item) and 1/2 (one
    back), summed over sources. Without the prior the pointer is uniform over the tokens."""
    pairs = np.array([[0, 5], [0, 6], [0, 6], [0, 6], [1, 7], [1, 6], [1, 6]])
    history, mask = jnp.array([[3, 1, 0]]), jnp.array([[True, True, True]])
    cands = jnp.asarray(CODES[[5, 6, 7]])[None]

    def item_probs(prior: bool) -> np.ndarray:
        model = tiny("encoder_decoder", "item", transition_memory=2, transition_memory_window=2,
                     transition_memory_copy=True, transition_memory_copy_prior=prior)
        model.transition_memory.load(
            TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
        head = model.copy_head
        head.query.kernel[...] = jnp.zeros_like(head.query.kernel[...])
        if head.query.bias is not None:
            head.query.bias[...] = jnp.zeros_like(head.query.bias[...])
        head.gate.kernel[...] = jnp.zeros_like(head.gate.kernel[...])
        head.gate.bias[...] = jnp.full_like(head.gate.bias[...], 50.0)
        logits = np.asarray(_scores(model, history, mask, cands)[0])
        taken = np.take_along_axis(logits, np.asarray(cands)[..., None], -1)[..., 0]
        return np.exp(taken.sum(-1))[0]

    # Counting: 5 <- 1 x 1; 6 <- 1 x 3 + 1/2 x 2; 7 <- 1/2 x 1; of 5.5 in all.
    np.testing.assert_allclose(item_probs(True), np.array([1.0, 4.0, 0.5]) / 5.5, atol=1e-5)
    np.testing.assert_allclose(item_probs(False), [0.25, 0.5, 0.25], atol=1e-5)
    with pytest.raises(ValueError, match="transition_memory_copy_prior needs"):
        tiny("encoder_decoder", "item", transition_memory=2, transition_memory_copy_prior=True)
