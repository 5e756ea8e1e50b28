"""The sids -> sft pipeline on a tiny synthetic world: results, stop/resume on one path, and the
same run over shards."""

import json

import numpy as np
import pytest

from experiments.configs import quickstart
from sgrec_jax.data import pipeline as data_pipeline
from sgrec_jax.data import shard_pipeline
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.load import dataset_settings
from sgrec_jax.data.shards import MANIFEST, write_shards
from sgrec_jax.data.split import training_sequences
from sgrec_jax.stages import pipeline
from sgrec_jax.stages.pipeline import (
    check_config,
    load_configured_dataset,
    pipeline_dataset,
    run_pipeline,
)
from sgrec_jax.train.loop import Preempted


def tiny_config(**sft):
    config = quickstart.get_config("rq_kmeans")
    config.data.options.update(num_items=150, num_users=60)
    config.sid.codebook_size = 8
    config.sid.embeddings.dim = 16
    config.model.options.update(num_layers=1, d_model=32, num_heads=2, d_ff=64)
    config.sft.update(batch_size=16, num_steps=12, warmup_steps=2, eval_every=6, log_every=1,
                      patience=0, **sft)
    config.eval.update(beam_size=10, batch_size=32, valid_users=20)
    return config


def losses(workdir):
    lines = (workdir / "sft" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert len(steps) == len(set(steps)), "a step was trained twice: the run did not resume"
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def test_sft_pipeline_writes_protocol_metrics(tmp_path):
    results = run_pipeline(tiny_config(), str(tmp_path))
    assert results["valid_rate"] == 1.0
    for name in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "argmax_invalid_rate"):
        assert 0.0 <= results[name] <= 1.0
    assert results["ndcg@10"] <= results["recall@10"]
    assert results["num_users"] == 60
    rankings = np.load(tmp_path / "sft" / "test_rankings.npz")
    assert rankings["items_uk"].shape == (60, 10)
    assert ((rankings["items_uk"] >= 0) & (rankings["items_uk"] < 150)).all()
    assert all(len(set(row)) == 10 for row in rankings["items_uk"])  # distinct items


def test_stopped_run_resumes_on_the_same_trajectory(tmp_path):
    straight = tmp_path / "straight"
    run_pipeline(tiny_config(), str(straight))

    interrupted = tmp_path / "interrupted"
    with pytest.raises(Preempted, match="paused: saved step 6"):
        run_pipeline(tiny_config(max_steps_per_run=6), str(interrupted))
    assert sorted(losses(interrupted)) == list(range(1, 7))
    resumed = run_pipeline(tiny_config(), str(interrupted))

    assert resumed["sft/last_step"] == 12
    first, second = losses(straight), losses(interrupted)
    assert sorted(second) == list(range(1, 13))
    assert second == first  # bitwise: same batches, same dropout keys, same updates
    for name in ("recall@10", "ndcg@10", "sft/best_step"):
        assert resumed[name] == json.loads((straight / "results.json").read_text())[name]


# Differ between any two runs, or by design between the sources (the shards' hashes).
UNEQUAL = {"wall_seconds", "provenance", "sft/train_seconds", "sft/examples_per_s",
           "sid/total_seconds", "sid/embedding_seconds", "sid/quantizer_seconds"}


def shard_config(tmp_path, **sft):
    """tiny_config with the counting floors, reading shards written by experiments.write_shards'
    code path (with the data settings recorded)."""
    config = tiny_config()
    config.sft.update(sft)
    config.stages = ("sids", "popularity", "item_transition", "sft")
    shards = tmp_path / "shards"
    if not (shards / MANIFEST).exists():
        write_shards(load_configured_dataset(config), shards,
                     max_history=config.data.max_history, examples_per_shard=100,
                     settings=dataset_settings(config.data))
    config.data.update(source="array_record", shards_dir=str(shards))
    return config


def test_the_pipeline_over_shards_equals_the_in_memory_run_without_the_sequences(
        tmp_path, monkeypatch):
    """data.source=array_record: the stages read the shard directory alone, and every metric
    equals the in-memory run's. The two pipelines shuffle differently (Grain's global shuffle
    against a numpy permutation, data/shard_pipeline.py), so the shards run is fed the in-memory
    epoch order here (as tests/data/test_shard_pipeline.py does for one model); all else (SIDs
    from the item table, validation and test splits, the floors and diagnostics from the
    counted transitions) is the shards' own."""
    config = shard_config(tmp_path, num_steps=4, eval_every=4)
    memory = config.copy_and_resolve_references()
    memory.data.source = "memory"
    expected = run_pipeline(memory, str(tmp_path / "memory"))

    def no_loading(*args, **kwargs):
        raise AssertionError("the pipeline over shards loaded the dataset")

    monkeypatch.setattr(pipeline, "load_dataset", no_loading)
    monkeypatch.setattr(shard_pipeline, "epoch_rows", lambda n, seed, epoch, positions:
                        data_pipeline._epoch_order(n, seed, epoch)[positions])
    results = run_pipeline(config, str(tmp_path / "shards_run"))
    assert set(results) == set(expected)
    assert {k: v for k, v in results.items() if k not in UNEQUAL} == {
        k: v for k, v in expected.items() if k not in UNEQUAL}
    assert results["sft/last_step"] == 4 and results["item_transition/num_users"] == 60
    manifest = str(tmp_path / "shards" / MANIFEST)
    assert manifest in results["provenance"]["data_files_sha256"]
    with pytest.raises(ValueError, match="stay on disk"):
        training_sequences(pipeline_dataset(config))


def test_a_run_over_shards_refuses_other_data_and_what_needs_the_sequences(tmp_path):
    other = shard_config(tmp_path)
    other.data.options.num_users = 61
    with pytest.raises(DataFormatError, match="written from another dataset .*"
                                              "data.options.num_users: shards 60, config 61"):
        run_pipeline(other, str(tmp_path / "other"))
    collaborative = shard_config(tmp_path)
    collaborative.sid.embeddings.source = "collaborative"
    collaborative.sid.embeddings.options = {}
    with pytest.raises(ValueError, match="sid.embeddings.source 'collaborative' counts "
                                         "co-occurrences over whole sequences"):
        check_config(collaborative)
    rl = shard_config(tmp_path)
    rl.stages = ("sids", "sft", "rl")
    with pytest.raises(ValueError, match="stage 'rl' needs data.source 'memory'"):
        check_config(rl)
