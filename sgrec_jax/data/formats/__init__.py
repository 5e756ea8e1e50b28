"""Readers for the public dataset formats, and the parsing helpers they share.

Every helper turns bad input into a `DataFormatError` that names the file and the line (or, for
a JSON object with no line to point at, the key), so loaders fail before any JAX work.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import pathlib
from collections.abc import Iterator
from typing import Any

from sgrec_jax.data.dataset import file_sha256
from sgrec_jax.data.errors import DataFormatError


def require_file(path: str | os.PathLike) -> pathlib.Path:
    """The path, after checking that it is an existing regular file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataFormatError(path, "no such file")
    return path


def require_dir(path: str | os.PathLike) -> pathlib.Path:
    """The path, after checking that it is an existing directory."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise DataFormatError(path, "no such directory")
    return path


def provenance(paths: list[pathlib.Path]) -> dict[str, str]:
    """Absolute path -> sha256 of every file a loader read."""
    return {str(p.resolve()): file_sha256(p) for p in paths}


class _DuplicateKey(Exception):
    pass


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of two equal keys silently; a duplicated user or item is a data error.
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def parse_json(text: str, path: str | os.PathLike, line: int | None = None) -> Any:
    """Parses JSON text from `path`; `line` is the file line of `text` (JSON-lines files)."""
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except json.JSONDecodeError as e:
        where = e.lineno if line is None else line
        raise DataFormatError(path, f"malformed JSON: {e.msg} (column {e.colno})", where) from None
    except _DuplicateKey as e:
        raise DataFormatError(path, f"duplicated key {e.args[0]!r}", line) from None


def read_json(path: str | os.PathLike) -> Any:
    """Loads a whole-file JSON document; errors give the JSON error's line."""
    path = require_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    return parse_json(text, path)


def read_object(path: str | os.PathLike) -> dict[str, Any]:
    """Loads a JSON file whose top level must be an object."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(value).__name__}")
    return value


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its line ending) of a text or .gz file.

    Accepts LF and CRLF endings; bad UTF-8 or a corrupt gzip stream names the line.
    """
    path = require_file(path)
    opener = gzip.open if path.suffix == ".gz" else open
    number = 0
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    yield number, raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as e:
                    raise DataFormatError(path, f"not UTF-8 text: {e.reason}", number) from None
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; truncation is EOFError.
        raise DataFormatError(path, f"unreadable: {e}", number + 1) from None


def parse_int(token: str, path: str | os.PathLike, line: int | None, what: str) -> int:
    """An integer id token (ASCII digits, optional leading "-"); anything else is a format error.

    Stricter than int(), which would also accept "1_000", " 7" and non-ASCII digits.
    """
    digits = token[1:] if token.startswith("-") else token
    if not (digits.isascii() and digits.isdigit()):
        raise DataFormatError(path, f"{what} {token!r} is not an integer", line)
    return int(token)


def clean_text(value: Any) -> str:
    """A text field as one clean string: None -> "", HTML entities unescaped, lists joined.

    Raises ValueError for values that are not text (numbers, objects).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return " ".join(html.unescape(value).split())
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return " ".join(t for t in (clean_text(v) for v in value) if t)
    raise ValueError(f"expected text, got {type(value).__name__}")


def format_categories(value: Any) -> str:
    """Categories as one string in the LETTER style: a path comma-joined, paths joined by "; ".

    Accepts a ready string (LETTER), a list of names (Amazon 2018 `category`) or a list of
    paths (Amazon 2014 `categories`, P5 `item_meta.jsonl`). Raises ValueError otherwise.
    """
    if value is None or isinstance(value, str):
        return clean_text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        value = [value]
    if isinstance(value, list) and all(
        isinstance(p, list) and all(isinstance(v, str) for v in p) for p in value
    ):
        paths = (",".join(t for t in (clean_text(v) for v in p) if t) for p in value)
        return "; ".join(p for p in paths if p)
    raise ValueError(f"expected a category path or a list of paths, got {value!r:.60}")
