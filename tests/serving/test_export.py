"""The exported decode: same items and scores as the Python path, file round trip, TPU lowering."""

import numpy as np
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.serving.export import export_decode, load_exported, save_exported
from sgrec_jax.serving.recommender import Recommender, pack_histories
from sgrec_jax.sid.build import semantic_ids_from_codes
from tests.models.tiny import tiny_over

NUM_ITEMS, H, B, BEAM, K = 40, 5, 4, 6, 3
SIDS = semantic_ids_from_codes(np.random.default_rng(0).integers(0, 5, (NUM_ITEMS, 3)), (5, 5, 5))
REQUESTS = [[1, 2, 3], [4], [], list(range(12))]


@pytest.fixture(scope="module")
def model():
    return tiny_over(SIDS, H)


@pytest.fixture(scope="module")
def expected(model):
    """(items, scores) of the Python path, Recommender.recommend."""
    recommender = Recommender(model, SIDS.catalog(), beam_size=BEAM, max_batch_size=B)
    return recommender.recommend(REQUESTS, k=K)


def requests():
    return pack_histories(REQUESTS, max_history=H, num_items=NUM_ITEMS)


def test_exported_decode_equals_the_python_path(model, expected):
    exported = export_decode(
        model, SIDS.catalog(), batch_size=B, beam_size=BEAM, k=K, platforms=["cpu", "tpu"]
    )
    assert exported.platforms == ("cpu", "tpu")
    # Parameters and catalog are constants: the requests are the only inputs.
    assert [(a.shape, str(a.dtype)) for a in exported.in_avals] == [((B, H), "int32"),
                                                                    ((B, H), "bool")]
    items, scores = exported.call(*requests())
    np.testing.assert_array_equal(items, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-5)


def test_serialized_module_round_trips_through_a_file(model, expected, tmp_path):
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
    path = tmp_path / "decode.jax"
    save_exported(path, export_decode(model, SIDS.catalog(), batch_size=B, beam_size=BEAM, k=K))
    items, scores = load_exported(path).call(*requests())
    np.testing.assert_array_equal(items, expected[0])
    np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-5)
    assert [p.name for p in tmp_path.iterdir()] == ["decode.jax"]  # no temp file left


def test_damaged_file_is_a_data_format_error(tmp_path):
    pytest.importorskip("flatbuffers", reason="jax.export serialization needs flatbuffers")
    path = tmp_path / "decode.jax"
    path.write_bytes(b"not a module" * 8)
    with pytest.raises(DataFormatError, match=f"{path}: not a serialized jax.export module"):
        load_exported(path)


def test_lowers_for_tpu_on_a_cpu_machine(model):
    exported = export_decode(
        model, SIDS.catalog(), batch_size=B, beam_size=BEAM, k=K, platforms=["tpu"]
    )
    assert exported.platforms == ("tpu",)
    assert [a.shape for a in exported.out_avals] == [(B, K), (B, K)]
    assert "stablehlo" in exported.mlir_module()


def test_k_above_beam_is_refused(model):
    with pytest.raises(ValueError, match="need 1 <= k <= beam_size"):
        export_decode(model, SIDS.catalog(), batch_size=B, beam_size=2, k=3)
