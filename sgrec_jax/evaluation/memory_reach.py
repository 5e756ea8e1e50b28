"""Memory reach: which test targets a transition memory of a given size can show the model.

A transition memory (models/transition_memory.py) gives the generator, for each of the user's last
`window` history items a, the k items that most often followed a in training. A copy head can
point only at those. Splitting the test users by whether their target is among them says how a
model's accuracy divides between what the memory offered and what the generator had to find, and
what a larger memory could add at most:

  in_memory         the target is among the k top successors of one of the last `window` items
                    (`TransitionCounts.top_successors` order: count, then item id)
  follows_outside   the target follows the last item in training, but not within the memory
  outside           neither (the generator alone can find these)

Comparing a model with the counting floor group by group shows where it gains and loses, and
`wider` sizes give each group's share that a memory of that size would move into in_memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.evaluation.metrics import ranking_metrics

REACH_GROUPS = ("in_memory", "follows_outside", "outside")


def memory_items(history_uh: np.ndarray, history_mask_uh: np.ndarray,
                 counts: TransitionCounts, k: int, window: int) -> np.ndarray:
    """int [U, window * k]: the memory's items per user, source-major (the last item's k top
    successors first), -1 where a source is padding or has fewer than k successors."""
    if k < 1 or window < 1:
        raise ValueError(f"k and window must be >= 1, got {k} and {window}")
    history_uh, mask_uh = np.asarray(history_uh), np.asarray(history_mask_uh, bool)
    successors_nk, count_nk = counts.top_successors(k)
    blocks = []
    for back in range(1, min(window, history_uh.shape[1]) + 1):
        source_u = np.where(mask_uh[:, -back], history_uh[:, -back], 0)
        real_uk = mask_uh[:, -back, None] & (count_nk[source_u] > 0)
        blocks.append(np.where(real_uk, successors_nk[source_u], -1))
    return np.concatenate(blocks, axis=1)


def in_memory(history_uh: np.ndarray, history_mask_uh: np.ndarray, targets_u: np.ndarray,
              counts: TransitionCounts, k: int, window: int) -> np.ndarray:
    """bool [U]: whether each target is among the k most frequent training successors of one of
    the user's last `window` real history items (PAD_ITEM-padded on the left)."""
    items_um = memory_items(history_uh, history_mask_uh, counts, k, window)
    return (items_um == np.asarray(targets_u)[:, None]).any(1)


def reach_groups(history_uh: np.ndarray, history_mask_uh: np.ndarray, targets_u: np.ndarray,
                 counts: TransitionCounts, k: int, window: int) -> dict[str, np.ndarray]:
    """The REACH_GROUPS of the module docstring as bool [U] masks (a partition of the users)."""
    memory_u = in_memory(history_uh, history_mask_uh, targets_u, counts, k, window)
    last_u = np.where(np.asarray(history_mask_uh, bool)[:, -1], np.asarray(history_uh)[:, -1], -1)
    follows_u = TrainingStatistics.from_counts(counts).follows(last_u, np.asarray(targets_u))
    return {"in_memory": memory_u, "follows_outside": follows_u & ~memory_u,
            "outside": ~follows_u & ~memory_u}


def reach_report(
    rankings: Mapping[str, tuple[np.ndarray, np.ndarray]],
    history_uh: np.ndarray,
    history_mask_uh: np.ndarray,
    targets_u: np.ndarray,
    counts: TransitionCounts,
    k: int,
    window: int,
    wider: Sequence[tuple[int, int]] = (),
    top: int = 10,
) -> dict:
    """Per group: its share of the users and each system's recall@top / ndcg@top within it,
    with memory_slots@top, how many of its top slots hold an item of the (k, window) memory;
    under "gains", the same for the group's users a wider memory (k', window') would bring into
    in_memory ("k<k'>_w<window'>"): what that memory could add at most, and what counting gets
    of it.

    rankings: system -> (items_uk, targets_u) in the users' order of `targets_u` (a system's
    targets must equal them: the same split).
    """
    targets_u = np.asarray(targets_u)
    memory_um = memory_items(history_uh, history_mask_uh, counts, k, window)
    groups = reach_groups(history_uh, history_mask_uh, targets_u, counts, k, window)
    wider_memory = {f"k{k2}_w{w2}": in_memory(history_uh, history_mask_uh, targets_u,
                                                      counts, k2, w2) & ~groups["in_memory"]
                    for k2, w2 in wider}
    report: dict = {"k": k, "window": window, "top": top, "num_users": int(len(targets_u)),
                    "groups": {}}
    for system, (_, system_targets_u) in rankings.items():
        if not np.array_equal(np.asarray(system_targets_u), targets_u):
            raise ValueError(f"system {system!r}: its test targets differ from the split's")

    def scored(mask_u: np.ndarray) -> dict:
        entry = {"share": float(mask_u.mean())}
        for system, (items_uk, _) in rankings.items():
            if mask_u.any():
                means = ranking_metrics(np.asarray(items_uk)[mask_u], targets_u[mask_u],
                                        ks=(top,))
                top_uk = np.asarray(items_uk)[mask_u, :top]
                slots_u = ((top_uk[:, :, None] == memory_um[mask_u][:, None, :])
                           & (top_uk[:, :, None] >= 0)).any(-1).sum(1)
                entry[system] = {f"recall@{top}": means[f"recall@{top}"],
                                 f"ndcg@{top}": means[f"ndcg@{top}"],
                                 f"memory_slots@{top}": float(slots_u.mean())}
            else:
                entry[system] = {f"recall@{top}": math.nan, f"ndcg@{top}": math.nan,
                                 f"memory_slots@{top}": math.nan}
        return entry

    for name, group_u in groups.items():
        report["groups"][name] = {
            **scored(group_u),
            "gains": {gain: scored(mask_u & group_u) for gain, mask_u in wider_memory.items()},
        }
    return report
