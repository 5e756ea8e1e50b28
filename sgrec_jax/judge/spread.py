"""The degenerate-judge check: do the judge's scores tell a user's candidates apart at all?

    figures = score_spread(evidence_kga)        # the sampled requests' candidates' evidence
    warn_if_degenerate(figures, source="llm smollm2")

A judge that gives every candidate of a request the same scores (a small model parroting the
example in its prompt, a server ignoring the input) still yields schema-valid answers, so the
schema-failure rate cannot reveal it; only the spread of the scores across the candidates of
one request can. Stage-2 fitting and PairAUC on such evidence sit at 0.5 by construction, and
this check says why before anyone trains on it.

Figures, over the requests with at least two answered candidates:
  std_over_candidates[a]: the mean over requests of the std of aspect a across the request's
    candidates (NaN candidates left out);
  identical_frac[a]: the share of requests whose candidates all got the same score on aspect a;
  all_identical_frac: the share whose candidates got the same scores on every aspect.
The judge is called degenerate when all_identical_frac >= DEGENERATE_SHARE or every aspect's
std_over_candidates is below MIN_STD.
"""

from __future__ import annotations

import warnings

import numpy as np
from absl import logging

from sgrec_jax.judge.aspects import ASPECTS

DEGENERATE_SHARE = 0.9  # of requests with identical scores for all their candidates
MIN_STD = 0.01  # scores are in [0, 1]: a mean spread under this is no signal


def score_spread(evidence_kga: np.ndarray) -> dict:
    """The spread figures (module docstring) of evidence float32 [k requests, G candidates, A],
    NaN where a candidate was not judged or lacks the aspect."""
    evidence_kga = np.asarray(evidence_kga, np.float64)
    if evidence_kga.ndim != 3 or evidence_kga.shape[-1] != len(ASPECTS):
        raise ValueError(f"evidence must be [requests, candidates, {len(ASPECTS)}], "
                         f"got shape {evidence_kga.shape}")
    answered_kg = np.isfinite(evidence_kga).any(axis=-1)
    rows = answered_kg.sum(axis=1) >= 2
    out: dict = {"aspects": list(ASPECTS), "requests_compared": int(rows.sum())}
    if not rows.any():
        out.update(std_over_candidates=None, identical_frac=None, all_identical_frac=None,
                   degenerate=None)
        return out
    ev = evidence_kga[rows]
    with warnings.catch_warnings():  # all-NaN slices give NaN, handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        std_ka = np.nanstd(ev, axis=1)  # NaN where a request has no value for the aspect
        identical_ka = (np.nanmax(ev, axis=1) - np.nanmin(ev, axis=1)) <= 1e-9
    present_ka = np.isfinite(std_ka)
    identical_ka &= present_ka
    std_a = [float(np.mean(std_ka[present_ka[:, a], a])) if present_ka[:, a].any() else None
             for a in range(len(ASPECTS))]
    identical_a = [float(identical_ka[present_ka[:, a], a].mean()) if present_ka[:, a].any()
                   else None for a in range(len(ASPECTS))]
    all_identical = float((identical_ka | ~present_ka).all(axis=1).mean())
    known_std = [s for s in std_a if s is not None]
    out.update(
        std_over_candidates=[None if s is None else round(s, 6) for s in std_a],
        identical_frac=[None if f is None else round(f, 4) for f in identical_a],
        all_identical_frac=round(all_identical, 4),
        degenerate=bool(all_identical >= DEGENERATE_SHARE
                        or (known_std and max(known_std) < MIN_STD)),
    )
    return out


def warn_if_degenerate(figures: dict, source: str) -> bool:
    """Logs a WARNING when `figures` (score_spread) call the judge degenerate; returns whether."""
    if not figures.get("degenerate"):
        return False
    logging.warning(
        "DEGENERATE JUDGE (%s): %.0f%% of %d requests got identical scores for all their "
        "candidates; mean std across candidates per aspect %s = %s. Its evidence cannot rank "
        "candidates (stage-2 PairAUC will sit near 0.5); use a stronger model.",
        source, 100 * figures["all_identical_frac"], figures["requests_compared"],
        figures["aspects"], figures["std_over_candidates"])
    return True
