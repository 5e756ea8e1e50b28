"""A shard directory alone gives the stages what the loaded dataset gave them, minus the
sequences; shards of other data, or written before the catalog, are refused by name."""

import json

import numpy as np
import pytest
from ml_collections import ConfigDict

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.load import dataset_settings
from sgrec_jax.data.shard_dataset import ShardDataset
from sgrec_jax.data.shards import MANIFEST, write_shards
from sgrec_jax.data.split import training_sequences
from sgrec_jax.data.synthetic import load_synthetic
from sgrec_jax.evaluation.diagnostics import TrainingStatistics

OPTIONS = {"num_users": 40, "num_items": 60, "branching": (2, 2)}


def data_config(**options):
    return ConfigDict({"format": "synthetic", "name": "", "bid_seed": 0, "min_seq_len": 3,
                       "options": {**OPTIONS, **options}})


@pytest.fixture(scope="module")
def dataset():
    return load_synthetic(None, **OPTIONS)


@pytest.fixture
def shards(dataset, tmp_path):
    directory = tmp_path / "shards"
    write_shards(dataset, directory, max_history=6, users_per_block=7,
                 settings=dataset_settings(data_config()))
    return directory


def test_everything_but_the_sequences_is_the_datasets(dataset, shards):
    view = ShardDataset(shards, max_history=6, settings=dataset_settings(data_config()))
    assert (view.name, view.num_items, view.num_users, view.num_interactions) == (
        dataset.name, dataset.num_items, dataset.num_users, dataset.num_interactions)
    assert view.stats() == dataset.stats()
    assert view.items.ids == dataset.items.ids and dict(view.items.text) == dict(dataset.items.text)
    assert view.items.attributes == dataset.items.attributes
    np.testing.assert_array_equal(view.items.bids, dataset.items.bids)
    ours = TrainingStatistics.from_counts(view.transitions)
    theirs = TrainingStatistics.from_sequences(training_sequences(dataset), dataset.num_items)
    for field in ("transition_keys", "transition_count", "target_count_n"):
        np.testing.assert_array_equal(getattr(ours, field), getattr(theirs, field), field)
    assert str(shards / MANIFEST) in view.source_files  # the shards' hashes, for provenance
    for what in ("sequences", "user_ids"):
        with pytest.raises(ValueError, match="stay on disk with data.source 'array_record'"):
            getattr(view, what)


def test_a_config_of_other_data_or_history_is_refused_naming_the_field(shards):
    with pytest.raises(DataFormatError, match="data.options.num_users: shards 40, config 41"
                       ) as error:
        ShardDataset(shards, settings=dataset_settings(data_config(num_users=41)))
    assert str(error.value).startswith(f"{shards / MANIFEST}:")
    with pytest.raises(DataFormatError, match="max_history 6, the config says 5"):
        ShardDataset(shards, max_history=5)
    # Spelling out a default is the same data.
    ShardDataset(shards, settings=dataset_settings(data_config(conflict=0.0)))


def test_shards_written_before_the_catalog_must_be_rewritten(shards):
    manifest = json.loads((shards / MANIFEST).read_text())
    del manifest["dataset"]["catalog_version"]
    (shards / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(DataFormatError, match="rewrite them with `python -m "
                                              "experiments.write_shards`") as error:
        ShardDataset(shards)
    assert str(error.value).startswith(f"{shards / MANIFEST}:")
