"""PSJ stage 1 (judge/run.py through experiments/judge.py): seeded pair sampling, the features
backend end to end with resume, the llm dry run, and the settings in config.json."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict

from experiments.configs import quickstart
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import Examples, leave_one_out
from sgrec_jax.judge.pairs import NEGATIVES, log_pairs
from sgrec_jax.judge.run import (
    candidate_columns,
    check_settings,
    first_occurrences,
    parse_candidates,
    sample_pairs,
    with_log_negatives,
)
from sgrec_jax.stages.pipeline import load_configured_dataset

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments/configs/quickstart.py"


def run(workdir: pathlib.Path, *args: str):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.judge", f"--config={QUICKSTART}",
         f"--workdir={workdir}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )


def test_parse_candidates():
    assert parse_candidates("target,negatives:4") == (True, 4)
    assert parse_candidates("negatives:2") == (False, 2)
    assert parse_candidates("target") == (True, 0)
    with pytest.raises(ValueError, match="bad part 'negs:2'"):
        parse_candidates("target,negs:2")
    with pytest.raises(ValueError, match="names no candidate"):
        parse_candidates("negatives:0")


def test_check_settings_fails_before_any_work():
    settings = quickstart.get_config().judge
    check_settings(settings)
    cases = {
        "backend": ("gpt", "judge.backend must be one of features, llm"),
        "concurrency": (0, "judge.concurrency must be >= 1"),
        "sample_ratio": (0.0, "judge.sample_ratio must be in (0, 1]"),
        "candidates": ("", "names no candidate"),
        "max_seconds": (-1.0, "judge.max_seconds must be >= 0"),
        "response_format": ("grammar", "judge.response_format must be one of json_schema, "
                                       "json_object_schema, json_object, none"),
    }
    for field, (value, message) in cases.items():
        bad = ConfigDict(settings.to_dict())
        bad[field] = value
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("]", r"\]")):
            check_settings(bad)
    bad = ConfigDict(settings.to_dict())
    bad.backend = "llm"
    with pytest.raises(ValueError, match="needs judge.base_url and judge.model"):
        check_settings(bad)


def test_sample_pairs_is_seeded_and_negatives_are_unseen():
    config = quickstart.get_config()
    dataset: SeqRecDataset = load_configured_dataset(config)
    train = leave_one_out(dataset, config.data.max_history).train
    sample, items_kg = sample_pairs(dataset, train, 0.01, "target,negatives:3", seed=0)
    again, items_again = sample_pairs(dataset, train, 0.01, "target,negatives:3", seed=0)
    assert len(sample) == max(1, round(0.01 * len(train))) and items_kg.shape == (len(sample), 4)
    np.testing.assert_array_equal(items_kg, items_again)
    np.testing.assert_array_equal(sample.user, again.user)
    np.testing.assert_array_equal(items_kg[:, 0], sample.target)
    for r, user in enumerate(sample.user):
        seen = set(dataset.sequences[user].tolist())
        assert not seen & set(items_kg[r, 1:].tolist())
        assert len(set(items_kg[r, 1:].tolist())) == 3
    other, _ = sample_pairs(dataset, train, 0.01, "target,negatives:3", seed=1)
    assert not np.array_equal(other.user, sample.user)


def test_log_negatives_are_stage_two_negatives_of_the_sampled_requests():
    config = quickstart.get_config()
    dataset: SeqRecDataset = load_configured_dataset(config)
    train = leave_one_out(dataset, config.data.max_history).train
    sample, items_kg = sample_pairs(dataset, train, 0.01, "target,negatives:1", seed=0)
    emb_nd = np.random.default_rng(0).normal(size=(dataset.num_items, 8)).astype(np.float32)
    extended = with_log_negatives(dataset, sample, items_kg, 0, emb_nd)
    assert candidate_columns("target,negatives:1", True) == ["target", "negative", *NEGATIVES]
    assert extended.shape == (len(sample), 2 + len(NEGATIVES))
    np.testing.assert_array_equal(extended[:, :2], items_kg)
    for c, kind in enumerate(NEGATIVES):
        expected = log_pairs(dataset, sample, negative=kind, seed=0, emb_nd=emb_nd).item_j
        np.testing.assert_array_equal(extended[:, 2 + c], expected)
    for r, user in enumerate(sample.user):  # never an item of the user's sequence
        assert not set(dataset.sequences[user].tolist()) & set(extended[r, 1:].tolist())


def test_first_occurrences_keeps_the_first_request_of_a_pair():
    sample = Examples(np.zeros((3, 2), np.int32), np.array([5, 6, 5], np.int32),
                      np.array([0, 0, 1], np.int32))
    items_kg = np.array([[5, 7], [7, 8], [5, 7]], np.int32)
    assert first_occurrences(sample, items_kg) == [(0, 0), (0, 1), (1, 1), (2, 0), (2, 1)]


def test_features_backend_writes_its_files_and_resumes(tmp_path):
    args = ("--config.judge.sample_ratio=0.01",
            "--config.judge.candidates=target,negatives:2")
    first = run(tmp_path, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    judge_dir = tmp_path / "judge"
    assert {p.name for p in judge_dir.iterdir()} >= {"cache.sqlite", "evidence.npz", "run.json",
                                                     "config.json", "sample.npz"}
    summary = json.loads((judge_dir / "run.json").read_text())
    assert set(summary) == {
        "dataset", "backend", "model", "version", "sample_ratio", "candidates",
        "sampled_requests", "training_requests", "stored_answers", "stored_failures", "run",
        "api_key_env", "aspects", "evidence_mean", "evidence_missing_frac",
        "sample_pairs_found_frac", "target_beats_negative", "score_spread",
    }
    # Feature evidence tells candidates apart: the degenerate-judge check stays quiet.
    spread = summary["score_spread"]
    assert spread["degenerate"] is False and spread["requests_compared"] > 0
    assert "DEGENERATE" not in first.stderr
    sample = np.load(judge_dir / "sample.npz")
    assert list(sample["columns"]) == ["target", "negative", "negative"]
    np.testing.assert_array_equal(sample["items"][:, 0], sample["target"])
    assert summary["backend"] == "features" and summary["api_key_env"] is None
    assert summary["candidates"] == "target,negatives:2" and summary["sample_ratio"] == 0.01
    scored = summary["run"]["scored"]
    assert scored == summary["stored_answers"] > 0 and summary["sample_pairs_found_frac"] == 1.0
    # Every setting, overrides included, reaches config.json.
    config = json.loads((judge_dir / "config.json").read_text())
    assert config["judge"]["sample_ratio"] == 0.01
    assert config["judge"]["candidates"] == "target,negatives:2"
    assert config["judge"]["backend"] == "features" and config["seed"] == 0
    evidence = np.load(judge_dir / "evidence.npz")
    assert len(evidence["users"]) == scored

    second = run(tmp_path, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = json.loads((judge_dir / "run.json").read_text())
    assert resumed["run"] == {"scored": 0, "cached_before": scored}
    assert resumed["evidence_mean"] == summary["evidence_mean"]


def test_llm_dry_run_estimates_and_sends_nothing(tmp_path):
    result = run(tmp_path, "--config.judge.backend=llm",
                 "--config.judge.base_url=http://127.0.0.1:9/v1", "--config.judge.model=m",
                 "--config.judge.sample_ratio=0.005", "--config.judge.dry_run=True")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prompt tokens" in result.stdout
    summary = json.loads((tmp_path / "judge" / "run.json").read_text())
    assert summary["backend"] == "llm" and summary["api_key_env"] == "OPENAI_API_KEY"
    assert summary["stored_answers"] == 0 and summary["run"]["to_ask"] == summary["run"]["pairs"]


def test_bad_settings_are_one_error_line(tmp_path):
    result = run(tmp_path, "--config.judge.backend=llm")
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and lines == [
        "error: judge.backend=llm needs judge.base_url and judge.model"], lines
    result = run(tmp_path, "--config.judge.sample_ratoi=0.1")
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1
    assert "judge has no field 'sample_ratoi'; did you mean sample_ratio?" in lines[0]
