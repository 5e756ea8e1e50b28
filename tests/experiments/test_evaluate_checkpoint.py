"""experiments.evaluate_checkpoint on a tiny trained SFT run: the selected step reproduces the
run's own test report and rankings, another step reports with the validation metrics the run
logged for it, the run directory is only read, and a step not kept is refused by name."""

import json

import numpy as np
import pytest

from experiments.evaluate_checkpoint import evaluate_checkpoint, kept_steps
from sgrec_jax.core.files import read_json, read_npz
from sgrec_jax.stages.pipeline import run_pipeline
from tests.stages.test_sft import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished sids -> item_transition -> sft run with checkpoints at steps 6 and 12."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tiny_config()
    config.stages = ("sids", "item_transition", "sft")
    return run_dir, run_pipeline(config, str(run_dir))


def test_selected_step_reproduces_the_runs_test_report(run, tmp_path):
    run_dir, run_results = run
    before = sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    step = run_results["sft/best_step"]
    results = evaluate_checkpoint(run_dir, step, tmp_path / "out")
    metrics = [k for k, v in run_results.items() if isinstance(v, float) and k != "wall_seconds"
               and not k.startswith(("sft/", "sid/", "item_transition/", "popularity/", "eval/"))]
    assert {"recall@10", "ndcg@10", "diag/recall@10|follows"} <= set(metrics)
    for key in metrics:
        np.testing.assert_equal(results[key], run_results[key], err_msg=key)  # NaN equals NaN
    np.testing.assert_array_equal(read_npz(tmp_path / "out" / "test_rankings.npz")["items_uk"],
                                  read_npz(run_dir / "sft" / "test_rankings.npz")["items_uk"])
    assert results["checkpoint/step"] == results["checkpoint/selected_step"] == step
    assert read_json(tmp_path / "out" / "results.json")["checkpoint/step"] == step
    assert results["provenance"]["config"]["sft"]["num_steps"] == 12
    assert sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before, \
        "evaluate_checkpoint wrote into the run directory"


def test_other_step_reports_its_logged_validation_metrics(run, tmp_path):
    run_dir, run_results = run
    assert kept_steps(run_dir) == [6, 12]
    other = 6 if run_results["sft/best_step"] == 12 else 12
    results = evaluate_checkpoint(run_dir, other, tmp_path)
    logged = [json.loads(line) for line in
              (run_dir / "sft" / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in logged if r.get("step") == other and "valid/ndcg@10" in r]
    assert results["checkpoint/valid"]["ndcg@10"] == row["valid/ndcg@10"]
    assert results["checkpoint/step"] == other != results["checkpoint/selected_step"]
    assert results["num_users"] == run_results["num_users"]
    with pytest.raises(ValueError, match=r"--step 7: .* keeps steps \[6, 12\]"):
        evaluate_checkpoint(run_dir, 7, tmp_path / "no")
    with pytest.raises(ValueError, match="is not a finished SFT run"):
        evaluate_checkpoint(tmp_path / "empty", 6)
