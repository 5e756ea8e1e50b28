"""The quickstart pipelines with a gs:// work directory (tests/fake_gcs.py): every file a run
reads or writes, checkpoints included, goes to the object store, and a second invocation resumes
from there as it does from a local directory."""

import json
import math

import pytest

from sgrec_jax.core.files import read_json
from sgrec_jax.stages.pipeline import run_pipeline
from sgrec_jax.stages.runs import run_or_load
from sgrec_jax.train.loop import Preempted
from tests.stages import test_rl, test_sft

WORKDIR, PREFIX = "gs://fake-bucket/quickstart", "fake-bucket/quickstart/"


def train_records(store, run_dir):
    lines = store.get(f"{PREFIX}{run_dir}/metrics.jsonl")[0].decode().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


def test_sft_pauses_and_resumes_on_the_same_trajectory(fake_gcs, tmp_path):
    with pytest.raises(Preempted, match="paused: saved step 6"):
        run_pipeline(test_sft.tiny_config(max_steps_per_run=6), WORKDIR)
    assert [r["step"] for r in train_records(fake_gcs, "sft")] == list(range(1, 7))
    assert read_json(f"{WORKDIR}/results.json") is None
    sids = fake_gcs.get(f"{PREFIX}sids.npz")

    resumed = run_pipeline(test_sft.tiny_config(), WORKDIR)
    assert resumed["sft/last_step"] == 12
    assert fake_gcs.get(f"{PREFIX}sids.npz") == sids  # reused, not rebuilt
    assert f"{PREFIX}sft/checkpoints/12/commit_success.txt" in fake_gcs.keys()
    assert not [k for k in fake_gcs.keys(PREFIX) if ".tmp" in k]

    straight = run_pipeline(test_sft.tiny_config(), str(tmp_path))  # the same run, locally
    assert {r["step"]: r["train/loss"] for r in train_records(fake_gcs, "sft")} == \
        test_sft.losses(tmp_path)  # bitwise, each step once
    for name in ("recall@10", "ndcg@10", "sft/best_step", "sid/collision_rate"):
        assert resumed[name] == straight[name], name

    # A third invocation (a sweep's, or the same command again) finds the finished run.
    again = run_or_load(test_sft.tiny_config(), WORKDIR, "quickstart")
    assert again == read_json(f"{WORKDIR}/results.json")
    assert again["ndcg@10"] == resumed["ndcg@10"]


def test_rl_with_its_reward_models_resumes(fake_gcs):
    """sids -> sft -> rl: the pCTR reward models' checkpoints and caches, the text embedding
    cache and the RL checkpoints all live on the object store."""
    with pytest.raises(Preempted, match="paused: saved step 2"):
        run_pipeline(test_rl.tiny_config(max_steps_per_run=2), WORKDIR)
    keys = fake_gcs.keys(PREFIX)
    assert f"{PREFIX}rewards/ecpm_seed0/report.json" in keys
    assert any(k.startswith(f"{PREFIX}rewards/text_emb_") for k in keys)
    reward_models = {k: fake_gcs.get(k) for k in keys if k.startswith(f"{PREFIX}rewards/")}

    results = run_pipeline(test_rl.tiny_config(), WORKDIR)
    assert results["rl/last_step"] == 4 and results["rl/valid_rate"] == 1.0
    assert [r["step"] for r in train_records(fake_gcs, "rl")] == [1, 2, 3, 4]
    for name in test_rl.RL_RESULTS:
        assert math.isfinite(results[name]), name
    # The reward models were loaded from their caches, not trained again.
    assert {k: fake_gcs.get(k) for k in reward_models} == reward_models
    assert f"{PREFIX}rl/test_rewards.npz" in fake_gcs.keys()
