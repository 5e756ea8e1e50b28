"""SIDs end to end (embeddings -> quantizer / index -> dedup -> catalog) and their cache."""

import jax.numpy as jnp
import numpy as np
import pytest
from ml_collections import ConfigDict

from experiments.configs import quickstart, scientific_sids
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.load import load_dataset
from sgrec_jax.sid.build import (
    build_semantic_ids,
    load_semantic_ids,
    save_semantic_ids,
    semantic_ids_from_codes,
)
from sgrec_jax.sid.catalog import allowed_mask, item_of_sid


def assert_bijection_and_exact_catalog(sids, num_items):
    codes = sids.codes_nl
    assert codes.shape == (num_items, len(sids.level_sizes))
    assert len(np.unique(codes, axis=0)) == num_items  # SID -> item is a function
    catalog = sids.catalog()
    items = np.asarray(item_of_sid(catalog, jnp.asarray(codes)))
    np.testing.assert_array_equal(items, np.arange(num_items))  # and item -> SID inverts it
    # The root's mask allows exactly the first codes in use, nothing else.
    root = np.asarray(allowed_mask(catalog, 0, jnp.zeros(1, jnp.int32)))[0]
    np.testing.assert_array_equal(np.flatnonzero(root), np.unique(codes[:, 0]))
    # A SID off the catalog (a used prefix with an unused dedup code) maps to no item.
    off = codes[:1].copy()
    off[0, -1] = np.sum((codes[:, :-1] == codes[0, :-1]).all(1))  # one past its group's codes
    assert int(item_of_sid(catalog, jnp.asarray(off))[0]) == -1


def test_from_codes_adds_dedup_level_and_reports_collisions():
    raw = np.array([[0, 1], [0, 1], [2, 3], [0, 1], [1, 1]], np.int32)
    sids = semantic_ids_from_codes(raw, (4, 4))
    np.testing.assert_array_equal(sids.codes_nl[:, -1], [0, 1, 0, 2, 0])
    assert sids.level_sizes == (4, 4, 3)
    assert sids.report["collision_rate"] == pytest.approx(3 / 5)
    assert sids.report["usage_l0"] == pytest.approx(3 / 4)
    assert_bijection_and_exact_catalog(sids, 5)


def test_quickstart_world_sids_are_a_bijection_and_cache_round_trips(tmp_path):
    config = quickstart.get_config("rq_kmeans")
    config.data.options.num_items = 400
    config.data.options.num_users = 150
    config.sid.codebook_size = 16
    dataset = load_dataset("synthetic", "", **config.data.options)
    sids = build_semantic_ids(dataset, config.sid, seed=0, workdir=tmp_path)
    assert_bijection_and_exact_catalog(sids, 400)
    assert sids.report["num_distinct_sids"] + sids.report["surplus_items"] == 400

    save_semantic_ids(tmp_path, sids)
    again = load_semantic_ids(tmp_path, 400)
    np.testing.assert_array_equal(again.codes_nl, sids.codes_nl)
    assert again.level_sizes == sids.level_sizes
    with pytest.raises(DataFormatError, match="another dataset"):
        load_semantic_ids(tmp_path, 401)
    (tmp_path / "sids.npz").write_bytes(b"truncated")
    with pytest.raises(DataFormatError, match="sids.npz"):
        load_semantic_ids(tmp_path, 400)


def test_unknown_sid_source_is_rejected():
    config = ConfigDict({"source": "magic"})
    with pytest.raises(ValueError, match="quantizer' or 'index"):
        build_semantic_ids(None, config, seed=0, workdir=None)


@pytest.mark.real_data
def test_letter_index_of_beauty_dedups_its_13_collisions(beauty_dir):
    dataset = load_dataset("p5", beauty_dir)
    config = ConfigDict({"source": "index", "index_path": str(beauty_dir / "letter_sid_index.json"),
                         "codebook_size": 256})
    sids = build_semantic_ids(dataset, config, seed=0, workdir=None)
    assert sids.report["surplus_items"] == 13
    assert sids.level_sizes == (256, 256, 256, 256, 3)
    assert_bijection_and_exact_catalog(sids, dataset.num_items)


@pytest.mark.real_data
def test_zero_collision_index_of_scientific(scientific_dir):
    config = scientific_sids.get_config("zcr_index")
    config.sid.codebook_size = 256
    dataset = load_dataset("letter", scientific_dir)
    sids = build_semantic_ids(dataset, config.sid, seed=0, workdir=None,
                              data_dir=scientific_dir)
    assert sids.report["collision_rate"] == 0
    assert sids.level_sizes == (256, 256, 256, 256, 1)
    assert_bijection_and_exact_catalog(sids, dataset.num_items)
