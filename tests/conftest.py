"""Test-wide settings: CPU only, a persistent compilation cache, the real-data directory, and
everything registered, as every entry point has it."""

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import sgrec_jax.registration  # noqa: E402, F401  (after the settings above: it imports JAX)


def data_dir(name: str) -> pathlib.Path:
    """The real dataset folder `name` under $SGREC_DATA_DIR, or skip the test."""
    root = os.environ.get("SGREC_DATA_DIR")
    if not root:
        pytest.skip("SGREC_DATA_DIR is not set")
    path = pathlib.Path(root) / name
    if not path.is_dir():
        pytest.skip(f"{path} does not exist")
    return path


@pytest.fixture
def beauty_dir() -> pathlib.Path:
    return data_dir("amazon2014_beauty")


@pytest.fixture
def scientific_dir() -> pathlib.Path:
    return data_dir("amazon2018_scientific")


@pytest.fixture
def fake_gcs(monkeypatch):
    """gs://fake-bucket/... in memory, for epath and Orbax alike (tests/fake_gcs.py); yields the
    ObjectStore."""
    from tests.fake_gcs import install

    store, server = install(monkeypatch)
    yield store
    server.close()


@pytest.fixture
def minilm_cache(tmp_path_factory, monkeypatch) -> str:
    """A test-local model cache ($SGREC_MODEL_CACHE), so tests never write to ~/.cache."""
    from sgrec_jax.embeddings.packaged_models import MODEL_CACHE_ENV
    from tests.embeddings.minilm import require_real_model

    require_real_model()
    path = str(tmp_path_factory.getbasetemp() / "minilm_cache")
    monkeypatch.setenv(MODEL_CACHE_ENV, path)
    return path
