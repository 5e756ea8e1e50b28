"""Atomic writes: a failed write leaves the previous file intact and no temp files behind, on a
local disk and on an object store (tests/fake_gcs.py)."""

import json

import numpy as np
import pytest

from sgrec_jax.core.files import (
    as_path,
    atomic_write,
    is_local,
    read_json,
    read_npz,
    write_json,
    write_npz,
)


def test_write_json_handles_numpy_and_replaces_atomically(tmp_path):
    path = tmp_path / "sub" / "results.json"
    write_json(path, {"a": np.float32(0.5), "b": np.arange(3), "c": np.int64(7)})
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "c": 7}
    write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}


def test_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "cache.json"
    write_json(path, {"kept": True})

    def crash(f):
        f.write(b'{"half": ')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert json.loads(path.read_text()) == {"kept": True}
    assert [p.name for p in tmp_path.iterdir()] == ["cache.json"]


def test_unserialisable_value_is_an_error_not_a_truncated_file(tmp_path):
    path = tmp_path / "r.json"
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(path, {"x": object()})
    assert not path.exists()


def test_write_npz_round_trip(tmp_path):
    write_npz(tmp_path / "a.npz", codes=np.arange(6).reshape(2, 3))
    with np.load(tmp_path / "a.npz") as f:
        np.testing.assert_array_equal(f["codes"], np.arange(6).reshape(2, 3))


def test_as_path_makes_local_paths_absolute_and_keeps_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert str(as_path("run/../w")) == str(tmp_path / "w")
    assert str(as_path("gs://bucket/run")) == "gs://bucket/run"
    assert is_local("run") and not is_local("gs://bucket/run")


def test_json_and_npz_round_trip_on_an_object_store(fake_gcs):
    write_json("gs://fake-bucket/run/sub/results.json", {"a": np.float32(0.5)})
    assert read_json("gs://fake-bucket/run/sub/results.json") == {"a": 0.5}
    assert read_json("gs://fake-bucket/run/missing.json") is None
    write_npz("gs://fake-bucket/run/a.npz", codes=np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(read_npz("gs://fake-bucket/run/a.npz")["codes"],
                                  np.arange(6).reshape(2, 3))
    assert fake_gcs.keys() == ["fake-bucket/run/a.npz", "fake-bucket/run/sub/results.json"]


def test_failed_write_on_an_object_store_uploads_nothing(fake_gcs):
    path = "gs://fake-bucket/cache.json"
    write_json(path, {"kept": True})

    def crash(f):
        f.write(b'{"half": ')
        raise OSError("network down")

    with pytest.raises(OSError, match="network down"):
        atomic_write(path, crash)
    assert read_json(path) == {"kept": True}
    assert fake_gcs.keys() == ["fake-bucket/cache.json"]


def test_a_file_that_is_not_json_is_an_error_naming_it(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"recall@10": 0.1')  # cut short, e.g. by a hand edit
    with pytest.raises(ValueError, match=r"results\.json: not valid JSON"):
        read_json(path)
    assert path.read_text() == '{"recall@10": 0.1'  # left as it was
