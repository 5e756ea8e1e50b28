"""The constrained policy: per-token log-softmax renormalised over the catalog trie.

At each level only the tokens that extend the SID prefix towards a real item are allowed; the
policy is the model's softmax restricted to those tokens and renormalised. An item's log-prob is
the sum of its L token log-probs under that policy. Beam search, sampling and RL (pi, pi_old,
pi_ref) all use `masked_log_softmax` / `constrained_logprob` from here and never a beam score,
so the RL ratio is exactly 1 on the first update.

Tokens off the trie get -inf. The arithmetic is arranged so that gradients stay finite even
then (double `where`), so a padded or broken candidate cannot poison a batch's gradient with NaN.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from sgrec_jax.sid.catalog import Catalog, allowed_mask, next_node


class SidPolicy(Protocol):
    """What decoding needs from a generator (sgrec_jax.models.generator.SidGenerator has it)."""

    def encode(self, history_bh: jax.Array, history_mask_bh: jax.Array, *,
               deterministic: bool = True) -> Any:
        """The per-request memory (any pytree), computed once per request. A generator with a
        transition memory also takes `leave_out_b` (see `encode_requests`)."""

    def decode_logits(self, memory: Any, prefix_codes_bkl: jax.Array, level: int) -> jax.Array:
        """float32 [B, K, V] logits of code `level` (static) after K prefixes per request."""

    def start_decoding(self, memory: Any, num_candidates: int) -> Any:
        """The empty incremental-decoding cache: a pytree whose leaves are [B, K, ...]."""

    def decode_step(self, memory: Any, cache: Any, codes_bkl: jax.Array,
                    level: jax.Array | int) -> tuple[jax.Array, Any]:
        """(float32 [B, K, V] logits of code `level` (may be traced) after the prefixes
        codes_bkl[..., :level], the cache with this position added)."""

    def sequence_logits(self, memory: Any, codes_bkl: jax.Array) -> jax.Array:
        """float32 [B, K, L, V] teacher-forced logits of K full SIDs per request."""


def encode_requests(model: SidPolicy, history_bh: jax.Array, history_mask_bh: jax.Array,
                    leave_out_b: jax.Array | None = None) -> Any:
    """`model.encode` of requests for decoding (deterministic).

    leave_out_b: int32 [B] the requests' own targets when the requests are training examples
    (RL rollouts): a generator with a transition memory then leaves each request's own
    last item -> target count out of its memory, as SFT does (models/transition_memory.py), so
    a training request sees what a validation or test request sees. None for every other
    request; models without a memory ignore it.
    """
    if leave_out_b is None:
        return model.encode(history_bh, history_mask_bh, deterministic=True)
    return model.encode(history_bh, history_mask_bh, deterministic=True, leave_out_b=leave_out_b)


class SequenceLogProb(NamedTuple):
    """Log-probs of SIDs under the constrained policy (unpacks as a 2-tuple).

    Attributes:
      logprob_bk: float32 [B, K] item log-prob, the sum over levels.
      token_logprob_bkl: float32 [B, K, L] per-level token log-prob.
    """

    logprob_bk: jax.Array
    token_logprob_bkl: jax.Array


def masked_log_softmax(logits_xv: jax.Array, mask_xv: jax.Array) -> jax.Array:
    """float32 [..., V] log-softmax over the True entries of `mask_xv` only, -inf elsewhere.

    A row with no True entry is all -inf (with zero, not NaN, gradients).
    """
    logits_xv = logits_xv.astype(jnp.float32)
    row_ok_x1 = mask_xv.any(-1, keepdims=True)
    # Masked rows would give logsumexp = -inf and NaN gradients; normalise them by anything finite.
    safe_xv = jnp.where(mask_xv, logits_xv, -jnp.inf)
    safe_xv = jnp.where(row_ok_x1, safe_xv, 0.0)
    lse_x1 = jax.nn.logsumexp(safe_xv, axis=-1, keepdims=True)
    return jnp.where(mask_xv, logits_xv - lse_x1, -jnp.inf)


def masked_entropy(logits_xv: jax.Array, mask_xv: jax.Array) -> jax.Array:
    """float32 [...] entropy (nats) of the softmax renormalised over `mask_xv`; 0 for empty rows."""
    return log_softmax_entropy(masked_log_softmax(logits_xv, mask_xv))


def log_softmax_entropy(logp_xv: jax.Array) -> jax.Array:
    """float32 [...] entropy -sum p log p of distributions given as log-probs [..., V], -inf
    entries (codes off the trie) taking no part; 0 for all -inf rows, with finite gradients."""
    support_xv = jnp.isfinite(logp_xv)
    logp_xv = jnp.where(support_xv, logp_xv, 0.0)
    p_xv = jnp.where(support_xv, jnp.exp(logp_xv), 0.0)
    return -(p_xv * logp_xv).sum(-1)


def path_masks(catalog: Catalog, codes_bkl: jax.Array) -> jax.Array:
    """bool [B, K, L, V]: the allowed tokens at each level along each SID's own prefix.

    After the first code that leaves the trie, every later level is all False.
    """
    b, k, levels = codes_bkl.shape
    if levels != catalog.num_levels:
        raise ValueError(f"SIDs have {levels} levels, the catalog {catalog.num_levels}")
    node_n = jnp.zeros(b * k, jnp.int32)
    masks = []
    for level in range(levels):
        masks.append(allowed_mask(catalog, level, node_n))
        node_n = next_node(catalog, level, node_n, codes_bkl[:, :, level].reshape(-1))
    return jnp.stack(masks, axis=1).reshape(b, k, levels, catalog.vocab_size)


def _check_logits(logits_bklv: jax.Array, codes_bkl: jax.Array, catalog: Catalog) -> None:
    want = (*codes_bkl.shape, catalog.vocab_size)
    if logits_bklv.shape != want:
        raise ValueError(
            f"logits have shape {logits_bklv.shape}; SIDs {codes_bkl.shape} over a catalog of "
            f"vocabulary {catalog.vocab_size} need {want}"
        )


def constrained_logprob(
    logits_bklv: jax.Array, codes_bkl: jax.Array, catalog: Catalog
) -> SequenceLogProb:
    """Log-probs of K SIDs per request under the constrained policy, from teacher-forced logits.

    Args:
      logits_bklv: float [B, K, L, V] teacher-forced logits (`model.sequence_logits`).
      codes_bkl: int [B, K, L] the SIDs; a SID outside the catalog gets -inf from its first
        invalid token on (codes of -1, e.g. beam-search padding, included).
      catalog: the trie whose valid next tokens define the policy.
    """
    return token_logprob(constrained_log_softmax(logits_bklv, codes_bkl, catalog), codes_bkl)


def constrained_log_softmax(
    logits_bklv: jax.Array, codes_bkl: jax.Array, catalog: Catalog
) -> jax.Array:
    """float32 [B, K, L, V] the constrained next-code distributions along K SIDs per request.

    Level l's row is log pi_l(. | x, codes < l): the log-softmax over the codes the trie allows
    after the SID's own prefix, -inf elsewhere (all -inf after the SID leaves the trie). Every
    log-prob, entropy and exact KL of a SID's levels is read off these rows.
    """
    _check_logits(logits_bklv, codes_bkl, catalog)
    return masked_log_softmax(logits_bklv, path_masks(catalog, codes_bkl))


def token_logprob(logp_bklv: jax.Array, codes_bkl: jax.Array) -> SequenceLogProb:
    """The log-probs of the SIDs' own codes in `constrained_log_softmax` rows; -inf for codes
    outside the vocabulary (e.g. beam-search padding -1)."""
    vocab = logp_bklv.shape[-1]
    in_range_bkl = (codes_bkl >= 0) & (codes_bkl < vocab)
    index_bkl1 = jnp.clip(codes_bkl, 0, vocab - 1)[..., None]
    token_bkl = jnp.take_along_axis(logp_bklv, index_bkl1, axis=-1)[..., 0]
    token_bkl = jnp.where(in_range_bkl, token_bkl, -jnp.inf)
    return SequenceLogProb(token_bkl.sum(-1), token_bkl)


def constrained_entropy(
    logits_bklv: jax.Array, codes_bkl: jax.Array, catalog: Catalog
) -> jax.Array:
    """float32 [B, K, L] entropy of the constrained next-token distribution at each level.

    Level l's distribution is the one after the SID's own prefix codes < l (what RL logs).
    """
    return log_softmax_entropy(constrained_log_softmax(logits_bklv, codes_bkl, catalog))


def sequence_logprob(
    model: SidPolicy, memory: Any, codes_bkl: jax.Array, catalog: Catalog
) -> SequenceLogProb:
    """`constrained_logprob` of K SIDs per request, scored by the model in one pass."""
    return constrained_logprob(model.sequence_logits(memory, codes_bkl), codes_bkl, catalog)
