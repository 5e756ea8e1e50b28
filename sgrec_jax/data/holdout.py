"""RL requests the SFT generator has not fitted: `config.data.rl_holdout`.

RL from an SFT policy draws its requests from the training split, whose targets SFT has already
fitted, so the rollouts of those requests mostly re-find memorised targets. A holdout takes some
training examples away from the generator's SFT and gives them to RL as its only requests:

  "none"              SFT trains on every training example; RL draws from all of them (default).
  "last_transition"   each user's last training transition, (s[:n-3] -> s[n-3]) in the notation
                      of split.py, is held out: one request per user with >= 4 items, the one
                      closest in time to the validation and test targets.
  "users:<fraction>"  every training example of that fraction of the users (those with training
                      examples; a fixed seeded draw, the same for every run) is held out.

Validation and test are untouched (the protocol), and so is every other model's training (SASRec,
the pCTR reward models, the judge): only the generator's SFT examples shrink. A generator's
transition memory still counts every training transition (the held-out ones are training data
as much as the rest); RL leaves each request's own transition out of it, as SFT does for its
examples (rl/grpo.py). The examples are
leave_one_out's in-memory training split, whose rows hold each user's prefixes in time order.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sgrec_jax.data.split import Examples

HOLDOUT_SEED = 0  # Seeds the "users:<fraction>" draw: the same users for every run and seed.


def parse_rl_holdout(value: str) -> tuple[str, float]:
    """(mode, fraction) of a data.rl_holdout value; fraction is 0 unless mode is "users"."""
    if value in ("none", "last_transition"):
        return value, 0.0
    mode, _, text = str(value).partition(":")
    if mode == "users":
        try:
            fraction = float(text)
        except ValueError:
            fraction = float("nan")
        if 0.0 < fraction < 1.0:
            return mode, fraction
    raise ValueError(f"data.rl_holdout must be 'none', 'last_transition' or 'users:<fraction>' "
                     f"with a fraction in (0, 1), got {value!r}")


def check_rl_holdout(data: Any) -> None:
    """Fails before any work on a data.rl_holdout the data source cannot serve."""
    mode, _ = parse_rl_holdout(data.rl_holdout)
    if mode != "none" and data.source != "memory":
        raise ValueError(f"data.rl_holdout {data.rl_holdout!r} needs data.source 'memory', got "
                         f"{data.source!r}")


def holdout_mask(train: Examples, rl_holdout: str) -> np.ndarray:
    """bool [n]: which training examples are held out of SFT for RL."""
    mode, fraction = parse_rl_holdout(rl_holdout)
    user = np.asarray(train.user)
    if mode == "none" or len(user) == 0:
        return np.zeros(len(user), bool)
    if mode == "last_transition":
        # The last row of each user: its prefixes come in time order.
        _, first_from_end = np.unique(user[::-1], return_index=True)
        mask = np.zeros(len(user), bool)
        mask[len(user) - 1 - first_from_end] = True
        return mask
    users = np.unique(user)
    count = max(1, round(fraction * len(users)))
    chosen = np.random.default_rng(HOLDOUT_SEED).permutation(users)[:count]
    return np.isin(user, chosen)


def _take(examples: Examples, rows: np.ndarray) -> Examples:
    return Examples(history=examples.history[rows], target=examples.target[rows],
                    user=examples.user[rows])


def sft_examples(train: Any, rl_holdout: str) -> Any:
    """The generator's SFT training examples: `train` without the held-out ones (`train`
    itself, in memory or shards, with "none")."""
    if parse_rl_holdout(rl_holdout)[0] == "none":
        return train
    kept = _take(train, ~holdout_mask(train, rl_holdout))
    if not len(kept):
        raise ValueError(f"data.rl_holdout {rl_holdout!r} leaves no SFT training examples")
    return kept


def rl_requests(train: Any, rl_holdout: str) -> Any:
    """The RL requests: the held-out training examples (all of `train` with "none")."""
    if parse_rl_holdout(rl_holdout)[0] == "none":
        return train
    held_out = _take(train, holdout_mask(train, rl_holdout))
    if not len(held_out):
        raise ValueError(f"data.rl_holdout {rl_holdout!r} holds out no training example (no "
                         "user has the 4 items a training example needs)")
    return held_out
