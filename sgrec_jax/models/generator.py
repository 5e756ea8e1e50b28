"""SID generators: read a user's history, emit the next item's L semantic-ID codes in order.

Both variants (registered in models.registry.MODELS) share one interface, built for three callers:

  training:     model(history_bh, history_mask_bh, target_codes_bl, deterministic=False)
                  -> float32 [B, L, V] teacher-forced logits (level l sees target codes < l).
  beam search:  memory = model.encode(history_bh, history_mask_bh)      # once per request
                cache = model.start_decoding(memory, num_candidates)
                model.decode_step(memory, cache, codes_bkl, level)      # per level, K beams
                  -> (float32 [B, K, V] next-code logits of K prefixes of `level` codes, cache).
  RL:           model.sequence_logits(memory, codes_bkl) -> float32 [B, K, L, V] for K full
                  candidate SIDs per request in one pass.

V = max(level_sizes); codes >= level_sizes[l] get NEG_INF logits. The decoder reads a `Memory`
(per decoder layer: the keys and values of the history, [B, S, heads, head_dim], and the history
mask) that all K candidates of a request share by broadcasting, never by tiling, so the history
is encoded once per request. Decoder positions are BOS, code_0, ..., code_{L-2}; position l
predicts level l. `decode_step` runs one position per beam and caches each decoder layer's
self-attention keys and values ([B, K, L, heads, head_dim]); `decode_logits` is its stateless
twin (it reruns the decoder over the level + 1 positions), kept for one-off scoring.

Optionally (models/transition_memory.py) the model also reads the items that followed the
user's last history items in training (as encoder input, or appended to what the decoder's
cross-attention reads: options.transition_memory_placement), and a copy head mixes a pointer
over them into every level's distribution; all three paths above apply it alike, so training,
beam search and RL score the same distribution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.models.history import HistoryEmbedding
from sgrec_jax.models.layers import Block, KeysValues, LevelHead, SidTokens, causal_mask
from sgrec_jax.models.options import ModelOptions
from sgrec_jax.models.transition_memory import CopyHead, TransitionMemory
from sgrec_jax.sid.dedup import check_codes


class SidCodes(nnx.Variable):
    """The int32 [N, L] SID table: model state, but not a parameter (optimizers skip it)."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Memory:
    """What the decoder reads, computed once per request by `encode`.

    Attributes:
      keys, values: one [B, S, heads, head_dim] array per decoder layer.
      mask_bs: bool [B, S], True at real (not padded) history tokens.
      copy_keys_bmd, copy_codes_bml, copy_mask_bm: with a copy head (options
        .transition_memory_copy), its keys of the M transition-memory items, their codes and
        mask (models/transition_memory.py); None otherwise.
      copy_prior_bm: the copy head's count prior of those items (options
        .transition_memory_copy_prior); None otherwise.
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    mask_bs: jax.Array
    copy_keys_bmd: jax.Array | None = None
    copy_codes_bml: jax.Array | None = None
    copy_mask_bm: jax.Array | None = None
    copy_prior_bm: jax.Array | None = None

    def layer(self, i: int) -> KeysValues:
        return KeysValues(self.keys[i], self.values[i], self.mask_bs[:, None, None, :])


class SidGenerator(nnx.Module):
    """The parts both variants share and the public interface (see the module docstring).

    Subclasses provide `_encode_tokens` (history tokens -> Memory), `_decoder_blocks` (the
    decoder's Blocks) and `memory_role`: how each decoder Block reads its layer of the Memory,
    "memory" (cross-attention, encoder-decoder) or "context" (a shared self-attention prefix,
    decoder-only).
    """

    def __init__(
        self,
        *,
        codes_nl: np.ndarray,
        level_sizes: Sequence[int],
        max_history: int,
        options: ModelOptions,
        rngs: nnx.Rngs,
    ):
        codes_nl = check_codes(codes_nl)
        level_sizes = tuple(int(s) for s in level_sizes)
        if codes_nl.shape[1] != len(level_sizes):
            raise ValueError(
                f"codes have {codes_nl.shape[1]} levels but level_sizes has {len(level_sizes)}"
            )
        over = np.argwhere(codes_nl >= np.array(level_sizes))
        if over.size:
            item, level = over[0]
            raise ValueError(
                f"item {item} has code {codes_nl[item, level]} at level {level}, "
                f"outside level_sizes[{level}] = {level_sizes[level]}"
            )
        if max_history < 1:
            raise ValueError(f"max_history must be >= 1, got {max_history}")
        precision, d = options.precision, options.d_model
        self.options = options
        self.level_sizes = level_sizes
        self.max_history = max_history
        self.codes = SidCodes(jnp.asarray(codes_nl))
        self.tokens = SidTokens(level_sizes, d, precision, rngs=rngs)
        self.history = HistoryEmbedding(
            options.history_encoding,
            max_history=max_history,
            num_items=codes_nl.shape[0],
            d_model=d,
            item_id_embedding=options.item_id_embedding,
            item_id_dropout=options.item_id_dropout,
            precision=precision,
            rngs=rngs,
        )
        # Created only when used, so models without it keep their state tree (and checkpoints).
        self.transition_memory = (
            TransitionMemory(num_items=codes_nl.shape[0], k=options.transition_memory,
                             window=options.transition_memory_window, d_model=d,
                             precision=precision, rngs=rngs,
                             share=options.transition_memory_share)
            if options.transition_memory else None
        )
        self.copy_head = (CopyHead(d, precision, rngs=rngs,
                                   gate=options.transition_memory_copy_gate,
                                   prior_window=(options.transition_memory_window
                                                 if options.transition_memory_copy_prior else 0))
                          if options.transition_memory_copy else None)
        self.target_positions = nnx.Embed(
            len(level_sizes), d, dtype=precision.dtype, param_dtype=precision.param_dtype,
            rngs=rngs,
        )
        self.dropout = nnx.Dropout(options.dropout, rngs=rngs)
        # The last norm runs in float32: logits and their softmax stay float32 under bf16.
        self.final_norm = nnx.RMSNorm(
            d, dtype=jnp.float32, param_dtype=precision.param_dtype, rngs=rngs
        )
        self.head = LevelHead(level_sizes, d, precision.param_dtype, rngs=rngs)

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def vocab_size(self) -> int:
        """V, the padded width of every level's logits."""
        return max(self.level_sizes)

    def item_codes(self, items: jax.Array) -> jax.Array:
        """int32 [..., L] SIDs of item indices [...]."""
        return self.codes[...][items]

    def __call__(
        self,
        history_bh: jax.Array,
        history_mask_bh: jax.Array,
        target_codes_bl: jax.Array,
        *,
        deterministic: bool,
        target_items_b: jax.Array | None = None,
        with_generator_logits: bool = False,
    ) -> jax.Array | tuple[jax.Array, jax.Array]:
        """float32 [B, L, V] teacher-forced logits: level l conditioned on target codes < l.

        target_items_b: the targets' item indices when these are training examples, so a
        transition memory leaves each example's own transition out (`encode`).
        with_generator_logits: also return the generator part's own logits [B, L, V], before a
        copy head mixes its pointer in (the same array without a copy head).
        """
        memory = self.encode(history_bh, history_mask_bh, deterministic=deterministic,
                             leave_out_b=target_items_b)
        mixed, generated = self.sequence_logits_parts(
            memory, target_codes_bl[:, None], deterministic=deterministic)
        if with_generator_logits:
            return mixed[:, 0], generated[:, 0]
        return mixed[:, 0]

    def encode(
        self, history_bh: jax.Array, history_mask_bh: jax.Array, *, deterministic: bool = True,
        leave_out_b: jax.Array | None = None,
    ) -> Memory:
        """The memory of histories [B, H] of item indices (masked slots may hold PAD_ITEM).

        With a transition memory (options.transition_memory > 0) its tokens follow the history
        tokens, in the encoder's input or after the encoder (options.transition_memory_placement);
        leave_out_b [B] (training targets) removes each example's own last item ->
        target count from it (models/transition_memory.py).
        """
        items_bh = jnp.where(history_mask_bh, history_bh, 0)
        code_emb_bhld = self.tokens(self.item_codes(items_bh))
        x_bsd, mask_bs = self.history(code_emb_bhld, items_bh, history_mask_bh,
                                      deterministic=deterministic)
        copy = {}
        appended = None
        if self.transition_memory is not None:
            memory_bmd, memory_mask_bm, memory_items_bm, memory_counts_bm = (
                self.transition_memory.tokens(
                    items_bh, history_mask_bh,
                    lambda items: self.tokens(self.item_codes(items)).sum(axis=-2),
                    leave_out_b=leave_out_b,
                ))
            if self.options.transition_memory_placement == "encoder":
                x_bsd = jnp.concatenate([x_bsd, memory_bmd.astype(x_bsd.dtype)], axis=1)
                mask_bs = jnp.concatenate([mask_bs, memory_mask_bm], axis=1)
            else:  # "cross_attention": after the encoder, which reads the history alone.
                appended = (self.dropout(memory_bmd.astype(x_bsd.dtype),
                                         deterministic=deterministic), memory_mask_bm)
            if self.copy_head is not None:
                copy = dict(copy_keys_bmd=self.copy_head.keys(memory_bmd),
                            copy_codes_bml=self.item_codes(memory_items_bm),
                            copy_mask_bm=memory_mask_bm,
                            copy_prior_bm=self.copy_head.prior(memory_counts_bm))
        x_bsd = self.dropout(x_bsd, deterministic=deterministic)
        memory = self._encode_tokens(x_bsd, mask_bs, deterministic=deterministic,
                                     appended=appended)
        return dataclasses.replace(memory, **copy) if copy else memory

    def sequence_logits(
        self, memory: Memory, codes_bkl: jax.Array, *, deterministic: bool = True
    ) -> jax.Array:
        """float32 [B, K, L, V] teacher-forced logits of K full SIDs [B, K, L] per request."""
        return self.sequence_logits_parts(memory, codes_bkl, deterministic=deterministic)[0]

    def sequence_logits_parts(
        self, memory: Memory, codes_bkl: jax.Array, *, deterministic: bool = True
    ) -> tuple[jax.Array, jax.Array]:
        """`sequence_logits` and the generator part's own logits before the copy head (one
        array twice without a copy head): float32 [B, K, L, V] each."""
        h_bkld = self.final_norm(
            self._hidden(memory, codes_bkl[..., : self.num_levels - 1], deterministic))
        generated = self.head.all_levels(h_bkld)
        return self._copy(generated, h_bkld, memory, codes_bkl,
                          jnp.arange(self.num_levels)), generated

    def decode_logits(self, memory: Memory, prefix_codes_bkl: jax.Array, level: int) -> jax.Array:
        """float32 [B, K, V] logits of code `level` after each of K prefixes [B, K, >= level].

        `level` (static) is how many prefix codes are real; entries beyond it are ignored.
        """
        if not 0 <= level < self.num_levels:
            raise ValueError(f"level must be in 0..{self.num_levels - 1}, got {level}")
        if prefix_codes_bkl.shape[-1] < level:
            raise ValueError(
                f"level {level} needs {level} prefix codes, got shape {prefix_codes_bkl.shape}"
            )
        h_bktd = self._hidden(memory, prefix_codes_bkl[..., :level], deterministic=True)
        h_bkd = self.final_norm(h_bktd[:, :, -1])
        return self._copy(self.head.level(h_bkd, level)[:, :, None], h_bkd[:, :, None], memory,
                          prefix_codes_bkl, jnp.array([level]))[:, :, 0]

    def start_decoding(self, memory: Memory, num_candidates: int) -> tuple[KeysValues, ...]:
        """Empty self-attention caches for `decode_step`, one per decoder layer.

        Every leaf is [B, K, L, heads, head_dim] with K = num_candidates, so a beam search can
        reorder (or widen) the cache along axis 1 like its beams.
        """
        b, heads = memory.mask_bs.shape[0], self.options.num_heads
        shape = (b, num_candidates, self.num_levels, heads, self.options.attention_head_dim)
        zeros = jnp.zeros(shape, memory.keys[0].dtype)
        return tuple(KeysValues(zeros, zeros, None) for _ in memory.keys)

    def decode_step(
        self,
        memory: Memory,
        cache: tuple[KeysValues, ...],
        codes_bkl: jax.Array,
        level: jax.Array | int,
    ) -> tuple[jax.Array, tuple[KeysValues, ...]]:
        """Incremental `decode_logits`: float32 [B, K, V] logits of code `level`, and the cache.

        Runs the decoder over position `level` only (BOS for level 0, else the code of level
        - 1 from codes_bkl [B, K, L]), reading positions < level from `cache`, which must hold
        them for these same K prefixes (`start_decoding`, then one step per level). `level` may
        be traced, so a `lax.scan` over levels compiles one step.
        """
        level = jnp.asarray(level, jnp.int32)
        previous = jnp.maximum(level - 1, 0)
        code_bk = jax.lax.dynamic_index_in_dim(codes_bkl, previous, axis=2, keepdims=False)
        x_bkd = jnp.where(level == 0, self.tokens.bos(), self.tokens.at_level(code_bk, previous))
        x_bk1d = (x_bkd + self.target_positions(level))[:, :, None]
        h_bk1d, cache = self._decode_step(memory, x_bk1d, cache, level)
        h_bk1d = self.final_norm(h_bk1d)
        logits_bk1v = self._copy(self.head.level(h_bk1d[:, :, 0], level)[:, :, None], h_bk1d,
                                 memory, codes_bkl, level[None])
        return logits_bk1v[:, :, 0], cache

    def _copy(self, logits_bktv: jax.Array, h_bktd: jax.Array, memory: Memory,
              codes_bkl: jax.Array, levels_t: jax.Array) -> jax.Array:
        """The logits of T positions (levels_t) after the copy head, if the model has one.

        codes_bkl may hold fewer than L codes (a prefix); the missing ones are never read.
        """
        if self.copy_head is None:
            return logits_bktv
        pad = self.num_levels - codes_bkl.shape[-1]
        codes_bkl = jnp.pad(codes_bkl[..., : self.num_levels], ((0, 0), (0, 0), (0, max(pad, 0))))
        return self.copy_head.mix(logits_bktv, h_bktd, levels_t, codes_bkl, memory.copy_keys_bmd,
                                  memory.copy_codes_bml, memory.copy_mask_bm,
                                  memory.copy_prior_bm)


    def _hidden(self, memory: Memory, codes_bkt: jax.Array, deterministic: bool) -> jax.Array:
        """Decoder states [B, K, t+1, D] over BOS + codes [B, K, t] (t < L)."""
        b, k, t = codes_bkt.shape
        if deterministic and k > 1 and t > 0:
            return self._hidden_shared_bos(memory, codes_bkt)
        bos_bk1d = jnp.broadcast_to(self.tokens.bos(), (b, k, 1, self.options.d_model))
        x_bktd = jnp.concatenate([bos_bk1d, self.tokens(codes_bkt)], axis=2)
        x_bktd = x_bktd + self.target_positions(jnp.arange(t + 1))
        x_bktd = self.dropout(x_bktd, deterministic=deterministic)
        return self._decode(memory, x_bktd, deterministic)

    def _hidden_shared_bos(self, memory: Memory, codes_bkt: jax.Array) -> jax.Array:
        """`_hidden` without dropout, with the BOS position decoded once per request.

        BOS is the same input for all K candidates of a request and, being first under the
        causal mask, reads nothing of theirs, so its states at every layer are the same for all
        K. It is decoded at K = 1 and the candidates' code positions read its keys and values
        as a block shared by the K candidates (broadcast, never tiled). Same values as the
        plain path (tested); where K candidates are scored together (the RL update and the
        reference scoring: G + 1 and G candidates of L positions) it saves 1/L of the decoder's
        work and, in the update, of its backward pass.
        """
        b, k, t = codes_bkt.shape
        positions_td = self.target_positions(jnp.arange(t + 1))
        d = positions_td.shape[-1]
        bos_b11d = jnp.broadcast_to(self.tokens.bos() + positions_td[0], (b, 1, 1, d))
        x_bktd = self.tokens(codes_bkt) + positions_td[1:]
        bos_mask = jnp.ones((b, 1, 1, 1), bool)
        own_mask = causal_mask(t)
        for i, block in enumerate(self._decoder_blocks()):
            layer = memory.layer(i)
            bos_b11d, bos = block(bos_b11d, causal_mask(1), deterministic=True,
                                  **{self.memory_role: layer})
            shared_bos = KeysValues(bos.k[:, 0], bos.v[:, 0], bos_mask)
            if self.memory_role == "memory":
                x_bktd, _ = block(x_bktd, own_mask, context=shared_bos, memory=layer,
                                  deterministic=True)
            else:  # The history is already the shared context: BOS joins it.
                context = KeysValues(
                    jnp.concatenate([layer.k, shared_bos.k], axis=1),
                    jnp.concatenate([layer.v, shared_bos.v], axis=1),
                    jnp.concatenate([jnp.broadcast_to(layer.mask, (b, 1, 1, layer.k.shape[1])),
                                     bos_mask], axis=-1),
                )
                x_bktd, _ = block(x_bktd, own_mask, context=context, deterministic=True)
        return jnp.concatenate([jnp.broadcast_to(bos_b11d, (b, k, 1, d)), x_bktd], axis=2)

    def _encode_tokens(
        self, x_bsd: jax.Array, mask_bs: jax.Array, *, deterministic: bool,
        appended: tuple[jax.Array, jax.Array] | None = None,
    ) -> Memory:
        """The Memory of encoder input tokens [B, S, d] with their mask; `appended` (tokens
        [B, M, d], mask [B, M]) joins what the decoder reads without passing the encoder."""
        raise NotImplementedError(f"{type(self).__name__} must implement _encode_tokens")

    def _decoder_blocks(self) -> nnx.List:
        raise NotImplementedError(f"{type(self).__name__} must implement _decoder_blocks")

    def _decode(self, memory: Memory, x_bktd: jax.Array, deterministic: bool) -> jax.Array:
        causal = causal_mask(x_bktd.shape[2])
        for i, block in enumerate(self._decoder_blocks()):
            x_bktd, _ = block(x_bktd, causal, deterministic=deterministic,
                              **{self.memory_role: memory.layer(i)})
        return x_bktd

    def _decode_step(
        self, memory: Memory, x_bk1d: jax.Array, cache: tuple[KeysValues, ...],
        position: jax.Array | int,
    ) -> tuple[jax.Array, tuple[KeysValues, ...]]:
        new_cache = []
        for i, block in enumerate(self._decoder_blocks()):
            x_bk1d, kv = block.decode_step(x_bk1d, cache[i], position,
                                           **{self.memory_role: memory.layer(i)})
            new_cache.append(kv)
        return x_bk1d, tuple(new_cache)


def _stack(options: ModelOptions, *, cross_attention: bool, rngs: nnx.Rngs) -> nnx.List:
    return nnx.List(
        [
            Block(
                options.d_model,
                options.num_heads,
                options.d_ff,
                options.dropout,
                options.precision,
                cross_attention=cross_attention,
                head_dim=options.attention_head_dim,
                rngs=rngs,
            )
            for _ in range(options.num_layers)
        ]
    )


class EncoderDecoder(SidGenerator):
    """TIGER: a bidirectional encoder over the history tokens; a causal decoder over BOS and the
    target codes that cross-attends to the encoder output. The memory holds each decoder layer's
    cross-attention keys and values, projected once per request."""

    def __init__(self, *, options: ModelOptions, rngs: nnx.Rngs, **kwargs):
        super().__init__(options=options, rngs=rngs, **kwargs)
        self.encoder = _stack(options, cross_attention=False, rngs=rngs)
        self.encoder_norm = options.precision.norm(options.d_model, rngs)
        self.decoder = _stack(options, cross_attention=True, rngs=rngs)
        # Memory tokens appended after the encoder get a norm of their own, as the encoder
        # output has (created only when used: other models keep their state tree).
        self.memory_norm = (
            options.precision.norm(options.d_model, rngs)
            if options.transition_memory
            and options.transition_memory_placement == "cross_attention" else None)

    memory_role = "memory"

    def _decoder_blocks(self) -> nnx.List:
        return self.decoder

    def _encode_tokens(
        self, x_bsd: jax.Array, mask_bs: jax.Array, *, deterministic: bool,
        appended: tuple[jax.Array, jax.Array] | None = None,
    ) -> Memory:
        x_b1sd, padding = x_bsd[:, None], mask_bs[:, None, None, :]
        for block in self.encoder:
            x_b1sd, _ = block(x_b1sd, padding, deterministic=deterministic)
        out_bsd = self.encoder_norm(x_b1sd[:, 0])
        if appended is not None:
            tokens_bmd, mask_bm = appended
            out_bsd = jnp.concatenate([out_bsd, self.memory_norm(tokens_bmd)], axis=1)
            mask_bs = jnp.concatenate([mask_bs, mask_bm], axis=1)
        kvs = [block.memory_keys_values(out_bsd, mask_bs) for block in self.decoder]
        return Memory(tuple(kv.k for kv in kvs), tuple(kv.v for kv in kvs), mask_bs)


class DecoderOnly(SidGenerator):
    """One causal stack over history tokens, BOS and the target codes.

    History states never depend on the target, so `encode` runs the stack over the history alone
    and caches every layer's self-attention keys and values; decoding appends the BOS + code
    positions, which read that cache as a shared prefix. This equals one pass over the
    concatenated sequence.
    """

    def __init__(self, *, options: ModelOptions, rngs: nnx.Rngs, **kwargs):
        if options.transition_memory and options.transition_memory_placement != "encoder":
            raise ValueError("transition_memory_placement "
                             f"{options.transition_memory_placement!r} needs the encoder_decoder "
                             "(the decoder_only model has no cross-attention)")
        super().__init__(options=options, rngs=rngs, **kwargs)
        self.blocks = _stack(options, cross_attention=False, rngs=rngs)

    memory_role = "context"

    def _decoder_blocks(self) -> nnx.List:
        return self.blocks

    def _encode_tokens(
        self, x_bsd: jax.Array, mask_bs: jax.Array, *, deterministic: bool,
        appended: tuple[jax.Array, jax.Array] | None = None,
    ) -> Memory:
        if appended is not None:
            raise ValueError("the decoder_only model reads every token through its stack")
        x_b1sd = x_bsd[:, None]
        mask = causal_mask(x_bsd.shape[1]) & mask_bs[:, None, None, :]
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            if i + 1 < len(self.blocks):
                x_b1sd, kv = block(x_b1sd, mask, deterministic=deterministic)
            else:  # the last block's history outputs are never read; only its keys/values are
                kv = block.self_keys_values(x_b1sd, mask)
            keys.append(kv.k[:, 0])
            values.append(kv.v[:, 0])
        return Memory(tuple(keys), tuple(values), mask_bs)
