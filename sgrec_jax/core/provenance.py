"""Provenance of a result: git commit, package versions, data file hashes, resolved config.

Every results file the project writes carries this record (benchmarks.md: "Every results file
records its provenance").
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

PACKAGES = (
    "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "sentencepiece", "absl-py",
    "ml_collections", "numpy", "scipy",
)


def git_commit(directory: str | os.PathLike | None = None) -> str:
    """The HEAD commit of the repository holding this package, with "-dirty" if it has changes."""
    directory = directory or os.path.dirname(os.path.abspath(__file__))
    try:
        def git(*args: str) -> str:
            return subprocess.run(
                ["git", *args], cwd=directory, capture_output=True, text=True, check=True,
                timeout=10,
            ).stdout.strip()

        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    versions = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(data_files: Mapping[str, str], config: Any = None) -> dict[str, Any]:
    """The provenance record: code, environment, data hashes and (optionally) the config."""
    record: dict[str, Any] = {
        "git_commit": git_commit(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": package_versions(),
        "data_files_sha256": dict(data_files),
    }
    if config is not None:
        record["config"] = config.to_dict() if hasattr(config, "to_dict") else config
    return record
