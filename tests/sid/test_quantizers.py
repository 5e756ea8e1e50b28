import numpy as np
import pytest

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.sid.quantizers import QUANTIZERS, quantize
from sgrec_jax.sid.rq_kmeans import rq_kmeans


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=(96, 6)).astype(np.float32)


def test_registry_names():
    assert QUANTIZERS.names() == ["rq_kmeans", "rq_vae"]
    with pytest.raises(UnknownNameError, match="valid names: rq_kmeans, rq_vae"):
        quantize("pq", np.zeros((2, 2)), levels=1, codebook_size=2, seed=0)


def test_quantize_passes_options(x):
    codes = quantize("rq_kmeans", x, levels=2, codebook_size=4, seed=3, balanced=True)
    direct = rq_kmeans(x, levels=2, codebook_size=4, seed=3, balanced=True).codes_nl
    np.testing.assert_array_equal(codes, direct)
    assert codes.dtype == np.int32
    with pytest.raises(ValueError, match="unknown option.* bogus .*valid options: balanced, init"):
        quantize("rq_kmeans", x, levels=2, codebook_size=4, seed=3, bogus=1)


def test_default_options_round_trip(x):
    assert QUANTIZERS.options("rq_kmeans") == {"iters": 50, "balanced": False, "init": "kmeans++"}
    options = QUANTIZERS.options("rq_vae")
    assert options["beta"] == 0.25 and options["hidden_dims"] == (512, 256, 128)
    assert not {"levels", "codebook_size", "seed"} & set(options)
    options = QUANTIZERS.options("rq_kmeans") | {"iters": 5}
    codes = quantize("rq_kmeans", x, levels=1, codebook_size=4, seed=0, **options)
    assert codes.shape == (96, 1)


def test_rq_vae_entry(x):
    options = dict(epochs=2, batch_size=32, hidden_dims=(8,), latent_dim=2)
    codes = quantize("rq_vae", x, levels=2, codebook_size=4, seed=0, **options)
    assert codes.shape == (96, 2) and codes.dtype == np.int32 and codes.max() < 4


def test_bad_embeddings_fail_before_quantizing(x):
    bad = x.copy()
    bad[5, 2] = np.nan
    with pytest.raises(DataFormatError, match=r"^emb\.npy: embedding row 5 "):
        quantize("rq_kmeans", bad, levels=1, codebook_size=4, seed=0, source="emb.npy")
    with pytest.raises(DataFormatError, match=r"non-empty \[N, D\]"):
        quantize("rq_kmeans", x[0], levels=1, codebook_size=4, seed=0, source="emb.npy")
