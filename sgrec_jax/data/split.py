"""The protocol's leave-one-out split with a capped history.

Per user with sequence s (length n): test = (s[:n-1] -> s[n-1]), validation = (s[:n-2] -> s[n-2]),
and every prefix of the rest is a training example: (s[:t] -> s[t]) for t = 1 .. n-3.
Histories keep only the last `max_history` items (TIGER: 20). On Beauty this gives 131,413
training examples.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sgrec_jax.data.dataset import SeqRecDataset

PAD_ITEM = -1  # Value of padded history slots; `history_mask` marks the real ones.


@dataclasses.dataclass(frozen=True)
class Examples:
    """A set of (history -> target) requests, histories right-aligned (most recent last).

    Attributes:
      history: int32 [n, max_history], PAD_ITEM on the left of short histories.
      target: int32 [n], the next item.
      user: int32 [n], internal user index of each example.
    """

    history: np.ndarray
    target: np.ndarray
    user: np.ndarray

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def history_mask(self) -> np.ndarray:
        return self.history != PAD_ITEM

    def as_dict(self) -> dict[str, np.ndarray]:
        return {"history": self.history, "target": self.target, "user": self.user}


@dataclasses.dataclass(frozen=True)
class Splits:
    train: Examples
    valid: Examples
    test: Examples


def _pack(histories: list[np.ndarray], targets: list[int], users: list[int], cap: int) -> Examples:
    out = np.full((len(histories), cap), PAD_ITEM, dtype=np.int32)
    for row, h in enumerate(histories):
        h = h[-cap:]
        if len(h):
            out[row, cap - len(h):] = h
    return Examples(
        history=out,
        target=np.asarray(targets, dtype=np.int32).reshape(-1),
        user=np.asarray(users, dtype=np.int32).reshape(-1),
    )


def leave_one_out(dataset: SeqRecDataset, max_history: int = 20) -> Splits:
    """Splits every user's sequence as the protocol says (see module docstring)."""
    if max_history < 1:
        raise ValueError(f"max_history must be >= 1, got {max_history}")
    parts: dict[str, tuple[list, list, list]] = {
        k: ([], [], []) for k in ("train", "valid", "test")
    }

    def add(part: str, history: np.ndarray, target: int, user: int) -> None:
        h, t, u = parts[part]
        h.append(history)
        t.append(target)
        u.append(user)

    for user, seq in enumerate(dataset.sequences):
        n = len(seq)
        if n < 3:
            raise ValueError(
                f"user {dataset.user_ids[user]!r} has {n} items; leave-one-out needs >= 3"
            )
        for t in range(1, n - 2):
            add("train", seq[:t], int(seq[t]), user)
        add("valid", seq[: n - 2], int(seq[n - 2]), user)
        add("test", seq[: n - 1], int(seq[n - 1]), user)
    return Splits(**{k: _pack(*v, cap=max_history) for k, v in parts.items()})


def training_sequences(dataset: SeqRecDataset) -> list[np.ndarray]:
    """Each user's sequence without the validation and test targets (no leakage)."""
    return [seq[:-2] for seq in dataset.sequences]
