"""The sids -> sft pipeline on a tiny synthetic world: results, and stop/resume on one path."""

import json

import numpy as np
import pytest

from experiments.configs import quickstart
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.shards import write_shards
from sgrec_jax.stages.pipeline import load_configured_dataset, run_pipeline
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


def test_sft_stage_trains_from_shards(tmp_path):
    """data.source=array_record: the stage streams the training split from shards of the very
    dataset its config describes, and evaluates on the shards' validation and test splits."""
    config = tiny_config()
    write_shards(load_configured_dataset(config), tmp_path / "shards",
                 max_history=config.data.max_history, examples_per_shard=100)
    config.data.update(source="array_record", shards_dir=str(tmp_path / "shards"))
    results = run_pipeline(config, str(tmp_path / "run"))
    assert results["sft/last_step"] == 12 and results["num_users"] == 60
    assert 0.0 <= results["ndcg@10"] <= results["recall@10"] <= 1.0
    other = tiny_config()
    other.data.options.num_users = 61
    other.data.update(source="array_record", shards_dir=str(tmp_path / "shards"))
    with pytest.raises(DataFormatError, match="written from another dataset"):
        run_pipeline(other, str(tmp_path / "other"))
