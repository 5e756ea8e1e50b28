"""Test-wide settings: CPU only, fast XLA compiles, a persistent compilation cache, the real-data
directory, and everything registered, as every entry point has it."""

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Most of the suite's time is XLA compiling tiny programs (an RL step: 12 s of a 23 s test), not
# running them. Without LLVM's optimisations and with the classic fusion emitters the same HLO
# compiles about 2.5x faster (5 s) into slower code, which tiny tests do not notice. Only the
# code generation changes: the program and its numerics up to float reassociation are XLA's own.
# Child processes inherit it (sgrec_jax/core/distributed.py:xla_flags_with_host_devices adds
# the device count).
TEST_XLA_FLAGS = ("--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
                  "--xla_cpu_use_fusion_emitters=false")
os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

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
