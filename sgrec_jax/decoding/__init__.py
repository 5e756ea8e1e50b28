"""Decoding from a SID generator under the catalog constraint: beam search, sampling, and the
constrained log-prob that beam search, sampling and RL share."""

from sgrec_jax.decoding.beam_search import (
    BeamResult,
    constrained_beam_search,
    constrained_beam_search_jit,
    unconstrained_argmax_invalid,
)
from sgrec_jax.decoding.logprob import (
    SequenceLogProb,
    SidPolicy,
    constrained_entropy,
    constrained_log_softmax,
    constrained_logprob,
    log_softmax_entropy,
    masked_entropy,
    masked_log_softmax,
    path_masks,
    sequence_logprob,
    token_logprob,
)
from sgrec_jax.decoding.sampling import SampleResult, constrained_sample, constrained_sample_jit

__all__ = [
    "BeamResult",
    "SampleResult",
    "SequenceLogProb",
    "SidPolicy",
    "constrained_beam_search",
    "constrained_beam_search_jit",
    "constrained_entropy",
    "constrained_log_softmax",
    "constrained_logprob",
    "constrained_sample",
    "constrained_sample_jit",
    "log_softmax_entropy",
    "masked_entropy",
    "masked_log_softmax",
    "path_masks",
    "sequence_logprob",
    "token_logprob",
    "unconstrained_argmax_invalid",
]
