"""File I/O of a run, through etils.epath: a work directory is a local path or a URI (gs://...).

Writes are atomic, so a crash mid-write never leaves a truncated results or cache file. On a
local disk the bytes go to a temp file in the same directory, which is fsynced and renamed over
the path. On an object store (gs://, s3://; every URI epath serves) an object becomes visible
only once its upload completes and a rename is a copy, so the bytes are built in memory and
uploaded to the path in one write: a crash before it completes leaves the previous object.

Input data (config.data.dir, SGREC_DATA_DIR) is read from local paths only.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np
from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    """Whether `path` is on the local filesystem (not a URI such as gs://bucket/dir)."""
    return "://" not in os.fspath(path)


def as_path(path: str | os.PathLike) -> epath.Path:
    """`path` as an epath.Path: a local path made absolute (Orbax refuses relative ones), a URI
    as it is."""
    text = os.fspath(path)
    return epath.Path(text if not is_local(text) else os.path.abspath(text))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write(f)` and puts what it wrote at `path` atomically (module docstring)."""
    if not is_local(path):
        buffer = io.BytesIO()
        write(buffer)
        with epath.Path(path).open("wb") as f:
            f.write(buffer.getvalue())
        return
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


def copy_file(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Copies a file whole to `destination` (atomically, as atomic_write); either may be a URI."""
    data = epath.Path(source).read_bytes()
    atomic_write(destination, lambda f: f.write(data))


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


def read_json(path: str | os.PathLike) -> Any | None:
    """The parsed file, or None when it does not exist; ValueError naming the file when it is
    not JSON (e.g. edited by hand: this module's own writes are atomic)."""
    path = epath.Path(path)
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically writes arrays to an .npz file."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an .npz file (pickled objects refused), read into memory."""
    with epath.Path(path).open("rb") as f, np.load(f, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """The array of an .npy file (pickled objects refused)."""
    with epath.Path(path).open("rb") as f:
        return np.load(f, allow_pickle=False)


def write_compressed_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Atomically writes arrays to a zip-compressed .npz file (for files meant to be committed)."""
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
