"""Transition memory: the generator also reads what followed the user's last items in training.

The diagnostics show where the generator loses to a counting model: on users whose target
directly follows their last history item somewhere in the training sequences, and above all on
transitions seen only once. The generator sees such a pair only inside one user's history and
does not memorise it (issue 12). This module gives the encoder the evidence directly: for each
of the last `window` history items a, the k items b that most often followed a in training
(`TransitionCounts.top_successors`), as extra encoder tokens. Each token is b's code embeddings
summed (the "item" encoding, shared with the decoder, so copying a token's codes is a lookup),
plus embeddings of how often a -> b occurred (log2 buckets) and of which history item a is
(0 = the last); with `share` also of how often a was followed by anything (log2 buckets) and of
b's share of a's successors (tenths), so the model can tell "b followed a once, the only time a
was followed" from "once in two hundred". The model still decides what to emit; the tokens are
context, not a score.

Leave-one-out: a training example (history ending in a -> target t) contributed one count to
a -> t, so in training the memory would always hold the target. `tokens(..., leave_out_b=t)`
subtracts that one count (an entry whose count falls to 0 disappears) and one from a's total
(with `share`), which makes a training
example see what a validation or test example sees: counts from the other training examples.
With window >= 2 the same holds one source further back: a training history's second-last ->
last pair is itself a training transition, while a test history's (last training item ->
validation item) never is, so training also leaves that pair's one count out of source 1 (the
sources further back are training pairs for every split alike). A validation history's pair is
a training pair; validation therefore sees one count more there than test does.

The table is model state, not a parameter (`SuccessorTable`): the SFT stage fills it from the
training counts with `load`, checkpoints carry it, and a restored model reads it back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.models.layers import NEG_INF, Precision

# Count buckets: 0 = no entry, then 1 + floor(log2(count)) capped at NUM_COUNT_BUCKETS - 1.
NUM_COUNT_BUCKETS = 16
# Share buckets: 0 = no entry, then ceil(10 * count / total) in 1..10.
NUM_SHARE_BUCKETS = 11
# What the copy head's gate reads: the decoder state, or also the pointer's context vector.
COPY_GATES = ("state", "context")
# Where the memory tokens join the model: the encoder's input (they run through every encoder
# layer beside the history tokens), or only what the decoder's cross-attention reads (after the
# encoder, which then runs over the history alone: the memory's k x window tokens outnumber a
# typical history several times over, so this makes the encoder that much cheaper).
MEMORY_PLACEMENTS = ("encoder", "cross_attention")


class SuccessorTable(nnx.Variable):
    """int32 [N, k] successor items or their counts, or [N] totals: model state, not a
    parameter."""


def count_buckets(counts: jax.Array) -> jax.Array:
    """int32 buckets of int counts: 0 for count <= 0, else 1 + floor(log2(count)), capped."""
    counts = jnp.asarray(counts, jnp.int32)
    log2 = jnp.floor(jnp.log2(jnp.maximum(counts, 1).astype(jnp.float32))).astype(jnp.int32)
    return jnp.where(counts > 0, jnp.minimum(1 + log2, NUM_COUNT_BUCKETS - 1), 0)


def share_buckets(counts: jax.Array, totals: jax.Array) -> jax.Array:
    """int32 buckets of count / total: 0 for count <= 0, else ceil(10 * count / total)."""
    share = counts.astype(jnp.float32) / jnp.maximum(totals, 1).astype(jnp.float32)
    bucket = jnp.clip(jnp.ceil(10.0 * share - 1e-6).astype(jnp.int32), 1, NUM_SHARE_BUCKETS - 1)
    return jnp.where(counts > 0, bucket, 0)


class TransitionMemory(nnx.Module):
    """Encoder tokens of the top-k training successors of each of the last `window` history items.

    Attributes:
      successors, counts: SuccessorTable int32 [N, k], zero (no entries) until `load`.
      totals: SuccessorTable int32 [N], how many training transitions leave each item (only
        with share=True, which adds the total and share features).
    """

    def __init__(self, *, num_items: int, k: int, window: int, d_model: int,
                 precision: Precision, rngs: nnx.Rngs, share: bool = False):
        if k < 1 or window < 1:
            raise ValueError(f"transition memory needs k >= 1 and window >= 1, got k={k}, "
                             f"window={window}")
        self.k, self.window = k, window
        self.successors = SuccessorTable(jnp.zeros((num_items, k), jnp.int32))
        self.counts = SuccessorTable(jnp.zeros((num_items, k), jnp.int32))
        embed = dict(dtype=precision.dtype, param_dtype=precision.param_dtype, rngs=rngs)
        self.count_embedding = nnx.Embed(NUM_COUNT_BUCKETS, d_model, **embed)
        # Created only when used, so models without them keep their state tree and initial values.
        self.totals = SuccessorTable(jnp.zeros((num_items,), jnp.int32)) if share else None
        self.total_embedding = nnx.Embed(NUM_COUNT_BUCKETS, d_model, **embed) if share else None
        self.share_embedding = nnx.Embed(NUM_SHARE_BUCKETS, d_model, **embed) if share else None
        self.source_embedding = nnx.Embed(window, d_model, **embed)

    def load(self, transitions: TransitionCounts) -> None:
        """Fills the table with the top-k successors of every item in `transitions`."""
        num_items = self.successors[...].shape[0]
        if transitions.num_items != num_items:
            raise ValueError(f"transition counts cover {transitions.num_items} items, the model's "
                             f"catalog {num_items}")
        items, counts = transitions.top_successors(self.k)
        self.successors[...] = jnp.asarray(items)
        self.counts[...] = jnp.asarray(counts)
        if self.totals is not None:
            totals = np.bincount(transitions.from_t, weights=transitions.count_t,
                                 minlength=num_items)
            self.totals[...] = jnp.asarray(np.minimum(totals, np.iinfo(np.int32).max), jnp.int32)

    @property
    def num_entries(self) -> int:
        """How many (item, successor) entries the table holds (0 before `load`)."""
        return int(np.count_nonzero(np.asarray(self.counts[...])))

    def tokens(
        self,
        items_bh: jax.Array,
        mask_bh: jax.Array,
        embed_items,
        leave_out_b: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(tokens [B, M, D], mask [B, M], items [B, M], counts [B, M]) for right-aligned
        histories, M = window * k (source-major: the last item's k successors first); counts
        are the entries' training counts after any leave-out (0 where masked).

        Args:
          items_bh: history item indices (valid indices in every slot, masked ones ignored).
          mask_bh: bool, True at real history items; slot H-1 is the last item.
          embed_items: item indices [...] -> [..., D] (the generator's summed code embeddings).
          leave_out_b: optional int [B], each example's own target: one count of
            last item -> target is removed, and one of second-last -> last item (module
            docstring). None at inference.
        """
        h = items_bh.shape[1]
        window = min(self.window, h)
        # Source j is history slot H-1-j (j = 0: the last item).
        source_bw = items_bh[:, h - window:][:, ::-1]
        valid_bw = mask_bh[:, h - window:][:, ::-1]
        succ_bwk = self.successors[...][source_bw]
        count_bwk = self.counts[...][source_bw]
        # The example's own pairs (module docstring): source 0 -> target, source 1 -> last item.
        own_w = jnp.arange(window) < 2
        if leave_out_b is not None:
            # What followed each source in this example: the target, then source j - 1.
            next_bw = jnp.concatenate([leave_out_b[:, None], source_bw[:, :window - 1]], axis=1)
            own = own_w[None, :, None] & (succ_bwk == next_bw[:, :, None])
            count_bwk = count_bwk - own.astype(count_bwk.dtype)
        mask_bwk = valid_bw[:, :, None] & (count_bwk > 0)
        x_bwkd = (embed_items(succ_bwk)
                  + self.count_embedding(count_buckets(count_bwk))
                  + self.source_embedding(jnp.arange(window))[None, :, None])
        if self.totals is not None:
            total_bw = self.totals[...][source_bw]
            if leave_out_b is not None:
                total_bw = total_bw - (own_w[None, :] & valid_bw).astype(total_bw.dtype)
            x_bwkd = (x_bwkd + self.total_embedding(count_buckets(total_bw))[:, :, None]
                      + self.share_embedding(share_buckets(count_bwk, total_bw[:, :, None])))
        b = items_bh.shape[0]
        m = window * self.k
        return (x_bwkd.reshape(b, m, -1), mask_bwk.reshape(b, m), succ_bwk.reshape(b, m),
                jnp.where(mask_bwk, count_bwk, 0).reshape(b, m))


class CopyHead(nnx.Module):
    """A pointer over the memory's items (pointer-generator, See et al. 2017), level by level.

    Reading the memory as context alone, the Scientific generator learned to lean on it (emptying
    the table at test costs a third of its recall@10) but ranked the target into its top 10 for
    only two thirds of the users whose target was in the memory: emitting an item's exact codes
    through cross-attention is learned slowly. The copy head makes copying one step: at a level
    l after prefix p, the decoder state h scores each memory item whose first l codes equal p,
    and the level's distribution becomes

        (1 - g) softmax(generator logits) + g * sum_m softmax(scores)_m [code_l(m) = code],

    with the gate g = sigmoid(w . h + b), and g = 0 where no memory item matches p. With
    gate="context" the gate also reads the pointer's context vector c = sum_m softmax(scores)_m
    key_m (See et al.'s p_gen reads theirs): the keys carry each item's count bucket, so the gate
    can open for "followed a hundred times" and stay shut for "followed once", which the decoder
    state alone sees only through cross-attention. Its weights start at zero, so the model
    starts as the "state" one. The product
    over levels thus gives a whole memory item the probability the model chose to copy it with.

    With `prior_window` > 0 (options.transition_memory_copy_prior) each memory token's score also
    gets a count prior, a_j log(count) + b_j for a token of source j (j = 0 the last item),
    learned per source and initialised to a_j = 1, b_j = -j log 2. Softmaxed, the prior alone
    ranks the memory's items as the counting floor does (counts weighted 1, 1/2, 1/4, ... by
    source, summed over sources): on Beauty and Scientific the pointer ranked the targets its
    memory held below where counting ranks them (docs/results.md, "memory reach"), although every
    key carries its count bucket. The decoder's scores then learn the deviations from it.
    Scores read each memory token's input embedding (the item's codes, its count bucket and its
    source), so both generator variants share the head. The outputs are log-probabilities:
    softmax, level renormalisation and the loss treat them as logits unchanged.
    """

    def __init__(self, d_model: int, precision: Precision, *, rngs: nnx.Rngs,
                 gate: str = "state", prior_window: int = 0):
        if gate not in COPY_GATES:
            raise ValueError(f"copy gate must be one of {COPY_GATES}, got {gate!r}")
        if prior_window < 0:
            raise ValueError(f"prior_window must be >= 0 (0 = no count prior), got {prior_window}")
        self.query = precision.linear(d_model, d_model, rngs)
        self.key = precision.linear(d_model, d_model, rngs)
        self.gate = nnx.Linear(d_model, 1, dtype=jnp.float32, param_dtype=precision.param_dtype,
                               rngs=rngs)
        # Created only when used, so "state" models keep their state tree and initial values.
        self.gate_context = (
            nnx.Linear(d_model, 1, use_bias=False, dtype=jnp.float32,
                       param_dtype=precision.param_dtype, kernel_init=nnx.initializers.zeros,
                       rngs=rngs)
            if gate == "context" else None)
        # Created only when used (see gate_context): the count prior's per-source scale, bias.
        self.prior_scale = (nnx.Param(jnp.ones((prior_window,), jnp.float32))
                            if prior_window else None)
        self.prior_bias = (nnx.Param(-np.log(2.0) * jnp.arange(prior_window, dtype=jnp.float32))
                           if prior_window else None)

    def prior(self, counts_bm: jax.Array) -> jax.Array | None:
        """float32 [B, M] the count prior of memory tokens with these counts (source-major, as
        `TransitionMemory.tokens` orders them); None without one."""
        if self.prior_scale is None:
            return None
        window = self.prior_scale.shape[0]
        b, m = counts_bm.shape
        log_count_bwk = jnp.log(jnp.maximum(counts_bm, 1).astype(jnp.float32)).reshape(
            b, window, m // window)
        prior_bwk = (self.prior_scale[...][None, :, None] * log_count_bwk
                     + self.prior_bias[...][None, :, None])
        return prior_bwk.reshape(b, m)

    def keys(self, tokens_bmd: jax.Array) -> jax.Array:
        """float32 [B, M, D] the copy keys of the memory tokens (computed once per request)."""
        return self.key(tokens_bmd).astype(jnp.float32)

    def mix(
        self,
        logits_bktv: jax.Array,
        h_bktd: jax.Array,
        levels_t: jax.Array,
        codes_bkl: jax.Array,
        keys_bmd: jax.Array,
        items_codes_bml: jax.Array,
        mask_bm: jax.Array,
        prior_bm: jax.Array | None = None,
    ) -> jax.Array:
        """float32 [B, K, T, V] log-probs of the mixture at T positions of K candidates.

        Args:
          logits_bktv: the generator's logits; codes a level lacks hold NEG_INF (kept NEG_INF).
          h_bktd: the decoder states those logits came from.
          levels_t: int [T], the SID level each position predicts.
          codes_bkl: the candidates' codes; position t reads only codes < levels_t[t].
          keys_bmd, items_codes_bml, mask_bm: the memory's copy keys, item codes and mask.
          prior_bm: the memory tokens' count prior (`prior`), added to their scores, or None.
        """
        num_levels = codes_bkl.shape[-1]
        vocab = logits_bktv.shape[-1]
        # eligible [B, K, T, M]: memory item m's codes before level t equal the candidate's.
        same_bkml = items_codes_bml[:, None] == codes_bkl[:, :, None, :]
        before_tl = jnp.arange(num_levels)[None, :] < levels_t[:, None]
        eligible = jnp.all(same_bkml[:, :, None] | ~before_tl[None, None, :, None, :], axis=-1)
        eligible = eligible & mask_bm[:, None, None, :]
        q_bktd = self.query(h_bktd).astype(jnp.float32)
        scores = jnp.einsum("bktd,bmd->bktm", q_bktd, keys_bmd) / np.sqrt(q_bktd.shape[-1])
        if prior_bm is not None:
            scores = scores + prior_bm[:, None, None, :]
        scores = jnp.where(eligible, scores, -jnp.inf)
        any_bkt = eligible.any(-1)
        weights = jnp.where(any_bkt[..., None], jax.nn.softmax(
            jnp.where(any_bkt[..., None], scores, 0.0), axis=-1), 0.0)
        code_bmt = jnp.take(items_codes_bml, levels_t, axis=2)
        copy_bktv = jnp.einsum("bktm,bmtv->bktv", weights, jax.nn.one_hot(code_bmt, vocab))
        gate_logit_bkt = self.gate(h_bktd.astype(jnp.float32))[..., 0]
        if self.gate_context is not None:
            context_bktd = jnp.einsum("bktm,bmd->bktd", weights, keys_bmd)
            gate_logit_bkt = gate_logit_bkt + self.gate_context(context_bktd)[..., 0]
        gate_bkt = jax.nn.sigmoid(gate_logit_bkt) * any_bkt
        p_bktv = ((1.0 - gate_bkt)[..., None] * jax.nn.softmax(logits_bktv, axis=-1)
                  + gate_bkt[..., None] * copy_bktv)
        log_p = jnp.log(jnp.maximum(p_bktv, 1e-30))
        return jnp.where(logits_bktv > NEG_INF / 2, log_p, NEG_INF)
