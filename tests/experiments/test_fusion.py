"""experiments.fusion on a tiny trained SFT run: lam selected on validation, the SFT report's
keys, rankings the paired bootstrap reads, a read-only run directory, and clear errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import experiments.fusion
from experiments.fusion import format_table, run_fusion
from sgrec_jax.core.files import read_json
from sgrec_jax.evaluation import fusion
from sgrec_jax.evaluation.paired import user_metrics
from sgrec_jax.stages.pipeline import run_pipeline
from sgrec_jax.train.evaluate import Rankings, ranking_report, scalar_metrics
from tests.stages.test_sft import tiny_config

LAMS = (0.0, 0.5, 2.0, 1e4)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished sids -> item_transition -> sft run, and its fusion results."""
    config = tiny_config()
    config.stages = ("sids", "item_transition", "sft")
    run_dir = tmp_path_factory.mktemp("run")
    sft_results = run_pipeline(config, str(run_dir))
    before = sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*"))
    out_dir = tmp_path_factory.mktemp("fusion")
    selections = []

    def spy(curve, metric):
        selections.append((dict(curve), metric))
        return fusion.select_lambda(curve, metric)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiments.fusion, "select_lambda", spy)
        results = run_fusion(run_dir, out_dir, lams=LAMS, num_counting=5)
    # One selection, on the validation subsample's reports, by ndcg@10.
    ((curve, metric),) = selections
    assert metric == "ndcg@10" and sorted(curve) == sorted(LAMS)
    assert {r["num_users"] for r in curve.values()} == {config.eval.valid_users}
    assert sorted((p, p.stat().st_mtime_ns) for p in run_dir.rglob("*")) == before, \
        "fusion wrote into the run directory"
    return config, run_dir, out_dir, sft_results, results


def test_lam_is_selected_on_validation_and_test_is_that_lams(run):
    config, _, out_dir, _, results = run
    valid = {float(lam): r for lam, r in results["fusion/valid_curve"].items()}
    test = {float(lam): r for lam, r in results["fusion/test_curve_not_for_selection"].items()}
    assert sorted(valid) == sorted(test) == sorted(LAMS)
    best = max(r["ndcg@10"] for r in valid.values())
    assert results["fusion/lam"] == min(lam for lam, r in valid.items() if r["ndcg@10"] == best)
    assert results["fusion/valid_users"] == config.eval.valid_users < results["num_users"]
    np.testing.assert_equal({k: results[k] for k in test[results["fusion/lam"]]},
                            test[results["fusion/lam"]])  # NaN equals NaN (empty groups)
    on_disk = read_json(out_dir / "results.json")
    assert on_disk["fusion/lam"] == results["fusion/lam"]
    assert "lam" in format_table(results) and "selected on validation" in format_table(results)


def test_report_has_the_sft_keys_and_the_saved_rankings(run):
    config, run_dir, out_dir, sft_results, results = run
    sft_keys = {k for k in sft_results if not k.startswith(("sft/", "sid/", "item_transition/",
                                                            "eval/"))}
    sft_keys -= {"dataset", "stages", "wall_seconds", "provenance"}
    assert any(k.startswith("diag/") for k in sft_keys)
    assert sft_keys <= set(results)
    provenance = results["provenance"]
    assert provenance["data_files_sha256"] == sft_results["provenance"]["data_files_sha256"]
    assert provenance["config"]["model"] == json.loads(config.to_json())["model"]
    assert provenance["git_commit"]
    assert results["fusion/beam_agrees_with_sft_rankings"] == 1.0
    assert 0 < results["fusion/candidate_target_share"] <= 1

    saved = Rankings.load(out_dir / "test_rankings.npz")
    sft = Rankings.load(run_dir / "sft" / "test_rankings.npz")
    np.testing.assert_array_equal(saved.users_u, sft.users_u)
    np.testing.assert_array_equal(saved.targets_u, sft.targets_u)
    assert saved.items_uk.shape == sft.items_uk.shape and saved.items_uk.dtype == np.int32
    again = scalar_metrics(ranking_report(saved, 150))
    for key in ("recall@10", "ndcg@10", "recall@5", "coverage@10"):
        assert again[key] == pytest.approx(results[key])
    # The paired bootstrap reads it next to the generator's and item_transition's rankings.
    for other in ("sft", "item_transition"):
        a = user_metrics(out_dir / "test_rankings.npz")
        b = user_metrics(run_dir / other / "test_rankings.npz")
        np.testing.assert_array_equal(a.users_u, b.users_u)


def test_lam_zero_is_the_generator_and_huge_lam_leads_with_counts(run):
    config, run_dir, _, sft_results, results = run
    test = results["fusion/test_curve_not_for_selection"]
    # lam = 0 reranks beam and counting candidates by the generator alone: close to the beam's
    # own ranking (equal where no counting candidate outscores a beam item).
    assert abs(test["0.0"]["recall@10"] - sft_results["recall@10"]) <= 0.1
    # A huge lam ranks transition-scored items first, so the follows users gain (or keep) hits.
    assert test["10000.0"]["diag/recall@10|follows"] >= test["0.0"]["diag/recall@10|follows"]


def test_bad_inputs_name_the_path_or_flag(run, tmp_path):
    _, run_dir, _, _, _ = run
    with pytest.raises(ValueError, match=f"--workdir {tmp_path} is not a finished SFT run: no "
                                         "config.json"):
        run_fusion(tmp_path, tmp_path / "out")
    (tmp_path / "config.json").write_text(tiny_config().to_json())
    (tmp_path / "sids.npz").write_bytes((run_dir / "sids.npz").read_bytes())
    (tmp_path / "results.json").write_text(json.dumps({"recall@10": 0.1}))
    with pytest.raises(ValueError, match="has no sft results"):
        run_fusion(tmp_path, tmp_path / "out")
    with pytest.raises(ValueError, match="--lams: every lam must be a finite number >= 0, got -1"):
        run_fusion(run_dir, tmp_path / "out", lams=(0, -1))
    with pytest.raises(ValueError, match="--counting_candidates must be >= 0"):
        run_fusion(run_dir, tmp_path / "out", num_counting=-3)
    assert not (tmp_path / "out").exists()


def test_cli_reports_bad_flags_in_one_line(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.fusion", f"--workdir={tmp_path}", "--lams=0,-2"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --lams: every lam must be a finite number >= 0, got -2.0 in [0.0, -2.0]")
