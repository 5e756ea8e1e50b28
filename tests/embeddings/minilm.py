"""Shared by the tests that run the packaged all-MiniLM-L6-v2 model (sentence_encoder source);
their `minilm_cache` fixture is in tests/conftest.py."""

import importlib.util
import os

import pytest


def require_real_model() -> None:
    """Skips without sentence-transformers or the model package, except under CI (env CI set),
    which installs requirements.txt: there their absence is a failure."""
    missing = [m for m in ("sentence_transformers", "all_minilm_l6_v2")
               if importlib.util.find_spec(m) is None]
    if missing:
        message = f"not importable: {', '.join(missing)} (pip install -r requirements.txt)"
        if os.environ.get("CI"):
            pytest.fail(f"CI installs requirements.txt, yet {message}")
        pytest.skip(message)
