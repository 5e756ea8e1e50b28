"""Which RL requests the policy trains on: config `rl.request_mix`.

"all": every RL request (`data.holdout.rl_requests`), as drawn.

"valid_follows": the requests whose target follows their last history item (the transition
last -> target occurs elsewhere in the training sequences, the request's own occurrence left
out) are subsampled, by a seeded draw fixed for every run, until they make up the share they
have among the validation targets; every other request is kept.

Why: RL requests are training transitions, and those repeat far more often than the transitions
to the held-out targets. On Beauty 20.3% of the RL requests' targets follow their last item
against 8.6% of the test targets' (docs/results.md), so a reward that pays for finding the
target pays mostly for copying a known successor, and GRPO on those groups taught the policy to
copy more: recall of the following targets rose, recall of the others fell, and R@10 with it.
Matching the validation share (a statistic of the validation split, as model selection uses)
trains RL on the mix of requests the policy is evaluated on.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgrec_jax.data.split import Examples
from sgrec_jax.evaluation.diagnostics import TrainingStatistics

REQUEST_MIXES = ("all", "valid_follows")
REQUEST_MIX_SEED = 0  # Seeds the subsample: the same requests for every run and seed.


@dataclasses.dataclass(frozen=True)
class RequestMix:
    """The requests RL trains on and the shares that chose them (for the run's summary)."""

    requests: Examples
    follows_share_before: float  # Among the RL requests as drawn.
    follows_share_after: float  # Among `requests`.
    follows_share_valid: float  # Among the validation targets (NaN with "all").


def follows_mask(examples: Examples, stats: TrainingStatistics, *,
                 own_transition: bool) -> np.ndarray:
    """bool [n]: whether each example's target follows its last history item in training.

    own_transition: the examples are training examples, so their own last -> target transition
    is one of the counted ones and is left out (a transition only the request itself makes does
    not "follow").
    """
    counts = stats.transition_counts(examples.history[:, -1], examples.target)
    return counts - int(own_transition) > 0


def _take(examples: Examples, keep: np.ndarray) -> Examples:
    return Examples(history=examples.history[keep], target=examples.target[keep],
                    user=examples.user[keep])


def mix_requests(mix: str, requests: Examples, valid: Examples,
                 stats: TrainingStatistics) -> RequestMix:
    """The RL requests under `mix` (module docstring); `stats` counts the training sequences'
    transitions and `valid` is the validation split (its targets set the share)."""
    if mix not in REQUEST_MIXES:
        raise ValueError(f"rl.request_mix {mix!r} is not one of {', '.join(REQUEST_MIXES)}")
    follows_n = follows_mask(requests, stats, own_transition=True)
    before = float(follows_n.mean())
    if mix == "all":
        return RequestMix(requests, before, before, float("nan"))
    share = float(follows_mask(valid, stats, own_transition=False).mean())
    others = int((~follows_n).sum())
    # Keep k following requests with k / (k + others) = share, never more than there are.
    keep_follows = int(follows_n.sum())
    if share < 1.0:
        keep_follows = min(keep_follows, round(share * others / (1.0 - share)))
    chosen = np.random.default_rng(REQUEST_MIX_SEED).permutation(np.flatnonzero(follows_n))
    keep = ~follows_n
    keep[chosen[:keep_follows]] = True
    if not keep.any():
        raise ValueError("rl.request_mix 'valid_follows' keeps no RL request: every target "
                         "follows its last item and no validation target does")
    return RequestMix(_take(requests, keep), before, keep_follows / int(keep.sum()), share)
