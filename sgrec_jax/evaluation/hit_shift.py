"""Where a policy's change in hit rate comes from: per group of users, the group's share, both
policies' hit rates, their difference and its contribution to the overall difference.

Validation and test can disagree about an RL policy (Scientific, issue 13: validation R@10
falls where test R@10 rises). Splitting the per-user change hit_policy - hit_start by a property
of the target (its training popularity, with one set of bucket edges for both splits) separates
the two reasons a split can disagree: a different mix of groups (shares) or a different change
within a group. The contributions share_g * diff_g sum to the overall difference, so
`reweighted_difference` can also say what one split's within-group changes would give under the
other split's mix.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sgrec_jax.evaluation.diagnostics import popularity_buckets, popularity_edges

SPLITS = ("valid", "test")  # the splits valid_test_shift_report compares, in its order


def hit_shift_by_group(group_u: np.ndarray, start_hit_u: np.ndarray, policy_hit_u: np.ndarray,
                       num_groups: int) -> list[dict[str, Any]]:
    """Per group g in 0 .. num_groups - 1: {"group", "users", "share", "start", "policy",
    "difference", "contribution"}, where start / policy are the group's mean hits (NaN when
    empty), difference their difference and contribution = share * difference (0 when empty),
    so the contributions sum to mean(policy_hit_u - start_hit_u)."""
    group_u = np.asarray(group_u)
    start, policy = (np.asarray(h, np.float64) for h in (start_hit_u, policy_hit_u))
    if not (len(group_u) == len(start) == len(policy)) or not len(group_u):
        raise ValueError(f"need equal, non-zero numbers of users, got {len(group_u)} groups, "
                         f"{len(start)} and {len(policy)} hits")
    if group_u.min() < 0 or group_u.max() >= num_groups:
        raise ValueError(f"groups must lie in [0, {num_groups}), got {group_u.min()} to "
                         f"{group_u.max()}")
    rows = []
    for g in range(num_groups):
        members = group_u == g
        count = int(members.sum())
        share = count / len(group_u)
        mean_start = float(start[members].mean()) if count else float("nan")
        mean_policy = float(policy[members].mean()) if count else float("nan")
        difference = mean_policy - mean_start
        rows.append({"group": g, "users": count, "share": share, "start": mean_start,
                     "policy": mean_policy, "difference": difference,
                     "contribution": share * difference if count else 0.0})
    return rows


def reweighted_difference(rows: list[dict[str, Any]], shares: list[float]) -> float:
    """sum_g shares[g] * rows[g]["difference"]: the overall difference these within-group
    changes would give under another mix of groups (empty groups count 0)."""
    if len(rows) != len(shares):
        raise ValueError(f"{len(rows)} groups but {len(shares)} shares")
    return float(sum(s * r["difference"] for r, s in zip(rows, shares) if r["users"]))


def valid_test_shift_report(hits: dict[str, dict[str, np.ndarray]], users: dict[str, np.ndarray],
                            target_count: dict[str, np.ndarray], rl_users: np.ndarray,
                            num_buckets: int) -> dict:
    """The report from per-split, per-policy hits ("start"/"policy" -> bool [U]), the split's
    users and its targets' training counts; rl_users: the users whose examples were RL's."""
    edges = popularity_edges(target_count["test"], num_buckets)
    report: dict = {"popularity_edges": edges.tolist(), "splits": {}}
    rows = {}
    for split in SPLITS:
        start, policy = hits[split]["start"], hits[split]["policy"]
        buckets = popularity_buckets(target_count[split], num_buckets, edges=edges)
        rows[split] = hit_shift_by_group(buckets, start, policy, num_buckets)
        rl_user_u = np.isin(users[split], rl_users)
        report["splits"][split] = {
            "users": len(start),
            "start": float(np.mean(start)), "policy": float(np.mean(policy)),
            "difference": float(np.mean(policy) - np.mean(start)),
            "median_target_count": float(np.median(target_count[split])),
            "by_popularity": rows[split],
            "by_user": dict(zip(("sft_users", "rl_users"),
                                hit_shift_by_group(rl_user_u.astype(int), start, policy, 2))),
        }
    for split, other in (("valid", "test"), ("test", "valid")):
        report["splits"][split][f"difference_under_{other}_mix"] = reweighted_difference(
            rows[split], [r["share"] for r in rows[other]])
    if np.array_equal(users["valid"], users["test"]):
        change = {s: hits[s]["policy"].astype(float) - hits[s]["start"] for s in SPLITS}
        report["per_user_correlation"] = float(np.corrcoef(change["valid"], change["test"])[0, 1])
    return report
