"""Atomic file writes: a crash mid-write never leaves a truncated results or cache file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(f)` on a temp file in the same directory, fsyncs it, then renames it to path."""
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _to_json(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically writes `obj` as indented JSON (numpy scalars and arrays allowed)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_to_json) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically writes arrays to an .npz file."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def write_compressed_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically writes arrays to a zip-compressed .npz file (for files meant to be committed)."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
