"""Provenance records name the code, the environment and the data."""

import re

from ml_collections import ConfigDict

from sgrec_jax.core.provenance import git_commit, package_versions, provenance


def test_git_commit_of_this_checkout():
    commit = git_commit()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", commit), commit


def test_git_commit_outside_a_repository(tmp_path):
    assert git_commit(tmp_path) == "unknown"


def test_package_versions_report_missing_packages():
    versions = package_versions(("jax", "surely-not-a-package-xyz"))
    assert re.match(r"\d+\.\d+", versions["jax"])
    assert versions["surely-not-a-package-xyz"] == "not installed"


def test_provenance_holds_data_hashes_and_config():
    record = provenance({"data/a.txt": "ab" * 32}, ConfigDict({"seed": 3}))
    assert record["data_files_sha256"] == {"data/a.txt": "ab" * 32}
    assert record["config"] == {"seed": 3}
    assert {"git_commit", "python", "platform", "packages"} <= set(record)
