"""The one error type for bad input data: it names the file and, when known, the line."""

from __future__ import annotations

import os


class DataFormatError(ValueError):
    """Raised for malformed or inconsistent input files.

    The message is one line, `path:line: what is wrong`, so that the command-line entry points
    can print it and exit non-zero instead of showing a traceback.
    """

    def __init__(self, path: str | os.PathLike | None, message: str, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.reason = message
        where = self.path or "<data>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {message}")
