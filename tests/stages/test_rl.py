"""The sids -> sft -> rl pipeline (quickstart_rl) on a tiny synthetic world: results (with the
SFT stage's ranking diagnostics, and recall@20 with a beam of 20), resume, the start-policy row
(num_steps 0), starting from another run's SFT work directory, and the checks of the
best-policy selection fields."""

import json
import math

import numpy as np
import pytest

from experiments.configs import quickstart_rl
from sgrec_jax.evaluation.metrics import catalog_coverage, ranking_metrics, valid_rate
from sgrec_jax.stages.multi_seed import DIAGNOSTIC_METRICS
from sgrec_jax.stages.pipeline import check_config, run_pipeline

RL_RESULTS = ("rl/recall@5", "rl/ndcg@5", "rl/recall@10", "rl/ndcg@10", "rl/valid_rate",
              "rl/ecpm@10", "rl/semantic@10", "rl/true_business@10", "rl/true_relevance@10")


def tiny_config(**rl):
    config = quickstart_rl.get_config()
    config.data.options.update(num_items=150, num_users=60)
    config.sid.codebook_size = 8
    config.sid.embeddings.dim = 16
    config.model.options.update(num_layers=1, d_model=32, num_heads=2, d_ff=64)
    config.sft.update(batch_size=16, num_steps=8, warmup_steps=2, eval_every=8, log_every=4,
                      patience=0)
    config.eval.update(beam_size=10, batch_size=32, valid_users=20)
    for ctr in ("ecpm", "ecpm_eval"):
        config.rl.channel_options[ctr].update(ctr_steps=20, eval_every=10, batch_size=32,
                                              warmup_steps=2, valid_examples=50, d_model=16)
    config.rl.update(**{**dict(group_size=4, batch_size=8, num_steps=4, warmup_steps=1,
                                log_every=1, eval_every=2), **rl})
    return config


def train_records(workdir):
    lines = (workdir / "rl" / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("quickstart_rl")
    return workdir, run_pipeline(tiny_config(), str(workdir))


def test_rl_writes_its_results_and_logs(run):
    workdir, results = run
    for name in RL_RESULTS:
        assert math.isfinite(results[name]), name
    for name in DIAGNOSTIC_METRICS:  # the ranking diagnostics the SFT stage reports too
        assert f"rl/{name}" in results and name in results, name
    assert not any(key.endswith("@20") for key in results), "beam 10 cannot rank 20 deep"
    assert results["rl/valid_rate"] == 1.0 and results["rl/last_step"] == 4
    assert results["rl/ecpm@10"] > 0 and 0 <= results["rl/true_relevance@10"] <= 1
    assert -1 <= results["rl/sign_agreement"] <= 1 and results["rl/nonfinite_steps"] == 0
    rankings = np.load(workdir / "rl" / "test_rankings.npz")
    assert rankings["items_uk"].shape == (60, 10)
    records = train_records(workdir)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for key in ("k3_beams", "kl_exact", "nll", "clip_frac", "entropy", "ratio_mean",
                "sign_agreement", "a2po/lambda_mean", "reward/ecpm/mean", "reward/emb_cosine/std",
                "zero_std_frac/ecpm"):
        assert f"train/{key}" in records[0], key
    assert records[0]["train/ratio_mean"] == 1.0 and records[0]["train/clip_frac"] == 0.0
    assert records[0]["train/k3_beams"] < 1e-6 < records[-1]["train/k3_beams"]
    assert records[0]["train/kl_exact"] < 1e-6 < records[-1]["train/kl_exact"]


def test_a_rerun_resumes_from_the_last_checkpoint_without_new_steps(run):
    workdir, results = run
    again = run_pipeline(tiny_config(), str(workdir))
    assert len(train_records(workdir)) == 4
    for name in (*RL_RESULTS, "rl/sign_agreement"):
        assert again[name] == results[name], name


def test_zero_steps_evaluates_the_start_policy_from_an_sft_workdir(run, tmp_path):
    workdir, results = run
    config = tiny_config(num_steps=0, init_workdir=str(workdir))
    config.stages = ("rl",)
    start = run_pipeline(config, str(tmp_path))
    # The SFT row: the same policy, the same beam search as the SFT stage's test evaluation.
    for name in ("recall@10", "ndcg@10", "recall@5"):
        assert start[f"rl/{name}"] == results[name], name
    diagnostics = [key for key in results if key.startswith("diag/")]
    assert "diag/first_codes@10" in diagnostics and "diag/recall@10|pop_q5" in diagnostics
    for name in diagnostics:  # the same code on the same rankings, histories and statistics
        np.testing.assert_equal(start[f"rl/{name}"], results[name], err_msg=name)
    assert start["rl/last_step"] == 0 and math.isnan(start["rl/sign_agreement"])
    assert not (tmp_path / "rl" / "checkpoints").exists()


def test_a_beam_of_20_ranks_20_deep_and_adds_recall_at_20(run, tmp_path):
    workdir, _ = run
    config = tiny_config(num_steps=0, init_workdir=str(workdir))
    config.stages = ("rl",)
    config.eval.beam_size = 20
    results = run_pipeline(config, str(tmp_path))
    rankings = np.load(tmp_path / "rl" / "test_rankings.npz")
    items, targets = rankings["items_uk"], rankings["targets_u"]
    assert items.shape == (60, 20)
    deep = ranking_metrics(items, targets, ks=(10, 20))
    for name in ("recall@20", "ndcg@20", "recall@10", "ndcg@10"):
        assert results[f"rl/{name}"] == pytest.approx(deep[name]), name
    assert results["rl/recall@20"] >= results["rl/recall@10"]
    # coverage and valid_rate stay those of the top 10, as in a 10-deep ranking.
    assert results["rl/coverage@10"] == catalog_coverage(items, 150, 10)
    assert results["rl/valid_rate"] == valid_rate(items[:, :10], 150)
    assert "rl/diag/recall@10|pop_q1" in results


def test_recall_at_20_is_selectable_only_with_a_beam_of_20():
    config = tiny_config(best_metric="ndcg@20")
    config.eval.beam_size = 20
    check_config(config)
    with pytest.raises(ValueError, match="best_metric 'ndcg@20' is not a validation metric"):
        check_config(tiny_config(best_metric="ndcg@20"))


def test_the_rl_loss_options_are_checked_before_any_work():
    check_config(tiny_config(pg_weight=0.0, nll_weight=1.0, beta=0.0, kl_estimator="exact",
                             level_credit="prefix_tree", candidate_weighting="policy",
                             request_mix="valid_follows", nll_learning_rate=5e-4))
    for options, message in [
        (dict(pg_weight=0.0, nll_weight=0.0), "not both 0"),
        (dict(nll_learning_rate=1e-4), r"nll_learning_rate 0.0001 must be >= 0, and 0 unless "
                                       r"nll_weight > 0 \(got 0.0\)"),
        (dict(nll_weight=1.0, nll_learning_rate=-1.0), "nll_learning_rate -1.0 must be >= 0"),
        (dict(nll_weight=-1.0), "nll_weight >= 0"),
        (dict(kl_estimator="k2"), "kl_estimator 'k2' is not one of k3, exact"),
        (dict(kl_direction="both"), "kl_direction 'both' is not one of reverse, forward"),
        (dict(level_credit="token"), "level_credit 'token' is not one of item, prefix_tree"),
        (dict(request_mix="follows"), "request_mix 'follows' is not one of all, valid_follows"),
        (dict(candidate_weighting="rank"),
         "candidate_weighting 'rank' is not one of uniform, policy"),
    ]:
        with pytest.raises(ValueError, match=message):
            check_config(tiny_config(**options))


@pytest.mark.parametrize("field, value, match", [
    ("best_metric", "ndcg@20", "best_metric 'ndcg@20' is not a validation metric: one of recall@5"),
    ("patience", 2, "patience 2 must be >= 0, and 0 without a best_metric"),
    ("patience", -1, "patience -1 must be >= 0"),
])
def test_the_check_names_a_bad_selection_field(field, value, match):
    check_config(tiny_config(best_metric="ecpm@10"))
    check_config(tiny_config(best_metric="true_relevance@10", patience=3))  # synthetic truth
    with pytest.raises(ValueError, match=match):
        check_config(tiny_config(**{field: value}))
