"""experiments.evaluate_checkpoint on a tiny trained SFT run: the selected step reproduces the
run's own test report and rankings, another step reports with the validation metrics the run
logged for it, the run directory is only read, and a step not kept is refused by name."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.evaluate_checkpoint import evaluate_checkpoint, kept_steps
from sgrec_jax.core.files import read_json, read_npz
from sgrec_jax.data.sources import load_splits
from sgrec_jax.serving.recommender import Recommender
from sgrec_jax.stages.finished_run import check_run_dir, load_run_dataset
from sgrec_jax.stages.pipeline import run_pipeline
from sgrec_jax.train.evaluate import rank_with_generator
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



def test_beam_size_ranks_test_and_validation_with_another_beam(run, tmp_path, monkeypatch):
    """--beam_size: the run's own width reproduces its rankings; another width ranks test and
    the run's validation users with it and says so; a width under 10 is refused."""
    run_dir, run_results = run
    step = run_results["sft/best_step"]
    config = check_run_dir(run_dir)
    same = evaluate_checkpoint(run_dir, step, tmp_path / "same", beam_size=config.eval.beam_size)
    np.testing.assert_array_equal(read_npz(tmp_path / "same" / "test_rankings.npz")["items_uk"],
                                  read_npz(run_dir / "sft" / "test_rankings.npz")["items_uk"])
    assert same["recall@10"] == run_results["recall@10"]
    widths = []

    def spy(*args, beam_size, **kwargs):
        widths.append(beam_size)
        return rank_with_generator(*args, beam_size=beam_size, **kwargs)

    monkeypatch.setattr("experiments.evaluate_checkpoint.rank_with_generator", spy)
    wide = evaluate_checkpoint(run_dir, step, tmp_path / "wide",
                               beam_size=2 * config.eval.beam_size)
    assert widths == [2 * config.eval.beam_size] * 2  # validation, then test
    assert wide["eval/beam_size"] == 2 * config.eval.beam_size
    assert wide["checkpoint/valid_decoded"]["num_users"] == config.eval.valid_users
    assert "checkpoint/valid_decoded" not in evaluate_checkpoint(run_dir, step, tmp_path / "plain")
    # Ten distinct catalog items per user, best first, as the run's own beam gives them.
    items = read_npz(tmp_path / "wide" / "test_rankings.npz")["items_uk"]
    assert items.shape == read_npz(run_dir / "sft" / "test_rankings.npz")["items_uk"].shape
    assert np.all(items >= 0) and all(len(set(row)) == len(row) for row in items.tolist())
    with pytest.raises(ValueError, match="--beam_size 5: must be >= 10"):
        evaluate_checkpoint(run_dir, step, tmp_path / "narrow", beam_size=5)


def test_without_copy_head_ranks_as_the_gate_shut_and_the_gate_shifts(run, tmp_path):
    """The copy head removed ranks exactly as the same checkpoint with its gate forced shut
    (each level's mixture is then the generator's own softmax), and so does --copy_gate_shift
    far below 0, which also ranks the validation users; a shift up changes the rankings; a run
    without a copy head is refused by name, and so are both flags together."""
    config = tiny_config()
    config.stages = ("sids", "sft")
    config.model.options.update(transition_memory=4, transition_memory_copy=True)
    run_dir = tmp_path / "copy_run"
    step = run_pipeline(config, str(run_dir))["sft/best_step"]
    without = evaluate_checkpoint(run_dir, step, tmp_path / "without", without_copy_head=True)
    assert without["checkpoint/without_copy_head"] is True
    items = read_npz(tmp_path / "without" / "test_rankings.npz")["items_uk"]
    with_head = read_npz(run_dir / "sft" / "test_rankings.npz")["items_uk"]
    assert not np.array_equal(items, with_head), "removing the copy head changed nothing"

    # The reference: the whole model with its gate's logit pushed to -1e9 (sigmoid 0).
    run_config = check_run_dir(run_dir)
    recommender = Recommender.from_workdir(run_dir, step=step)
    gate = recommender.model.copy_head.gate
    gate.kernel[...] = jnp.zeros_like(gate.kernel[...])
    gate.bias[...] = jnp.full_like(gate.bias[...], -1e9)
    test = load_splits(load_run_dataset(run_dir, run_config),
                       max_history=run_config.data.max_history).test
    shut = rank_with_generator(recommender.model, recommender.catalog, test,
                               beam_size=recommender.beam_size, k=10,
                               batch_size=run_config.eval.batch_size)
    np.testing.assert_array_equal(items, shut.items_uk)

    # A gate shifted far down ranks as the head removed, test and validation alike; the
    # validation users are the SFT stage's (config.eval.valid_users of them).
    shifted = evaluate_checkpoint(run_dir, step, tmp_path / "shifted", copy_gate_shift=-1e9)
    np.testing.assert_array_equal(
        read_npz(tmp_path / "shifted" / "test_rankings.npz")["items_uk"], items)
    assert shifted["checkpoint/copy_gate_shift"] == -1e9
    assert shifted["checkpoint/valid_decoded"]["num_users"] == run_config.eval.valid_users
    assert "checkpoint/valid_decoded" not in without
    evaluate_checkpoint(run_dir, step, tmp_path / "opened", copy_gate_shift=5.0)
    assert not np.array_equal(
        read_npz(tmp_path / "opened" / "test_rankings.npz")["items_uk"], with_head)
    with pytest.raises(ValueError, match="give one of them"):
        evaluate_checkpoint(run_dir, step, tmp_path / "both", without_copy_head=True,
                            copy_gate_shift=1.0)

    plain_dir, _ = run
    for flags in (dict(without_copy_head=True), dict(copy_gate_shift=1.0)):
        with pytest.raises(ValueError, match="trained no copy head"):
            evaluate_checkpoint(plain_dir, 6, tmp_path / "refused", **flags)
    assert not (tmp_path / "refused").exists() and not (tmp_path / "both").exists()
