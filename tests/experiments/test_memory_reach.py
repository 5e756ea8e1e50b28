"""experiments/memory_reach.py on a finished tiny run: its groups weighted by their shares give
back each system's test recall@10 of results.json, and bad arguments are refused by name."""

import pytest

from experiments.memory_reach import memory_reach_of_run, parse_sizes
from sgrec_jax.core.files import read_json
from sgrec_jax.stages.pipeline import run_pipeline
from tests.stages.test_sft import tiny_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished sids -> popularity -> item_transition -> sft run (no transition memory)."""
    run_dir = tmp_path_factory.mktemp("run")
    config = tiny_config()
    config.stages = ("sids", "popularity", "item_transition", "sft")
    return run_dir, run_pipeline(config, str(run_dir))


def test_groups_weighted_by_share_give_each_systems_recall(run, tmp_path):
    run_dir, results = run
    out = tmp_path / "reach.json"
    report = memory_reach_of_run(run_dir, 3, 2, ["6:3"], out)
    groups = report["groups"]
    written = read_json(out)
    assert "provenance" in written and written["groups"].keys() == groups.keys()
    assert written["groups"]["outside"]["sft"] == groups["outside"]["sft"]
    assert sum(g["share"] for g in groups.values()) == pytest.approx(1.0)
    assert groups["in_memory"]["share"] > 0
    for system, prefix in (("sft", ""), ("item_transition", "item_transition/"),
                           ("popularity", "popularity/")):
        recall = sum(g["share"] * g[system]["recall@10"] for g in groups.values()
                     if g["share"] > 0)
        assert recall == pytest.approx(results[f"{prefix}recall@10"], abs=1e-9), system
    assert all(g["gains"]["k6_w3"]["share"] <= g["share"] for g in groups.values())
    assert groups["in_memory"]["gains"]["k6_w3"]["share"] == 0.0


def test_refuses_a_run_without_memory_options_and_bad_sizes(run, tmp_path):
    run_dir, _ = run
    with pytest.raises(ValueError, match="no transition memory: give --k"):
        memory_reach_of_run(run_dir, 0, 0, [], tmp_path / "x.json")
    with pytest.raises(ValueError, match="K:WINDOW with positive integers, got '20'"):
        parse_sizes(["20"])
    with pytest.raises(ValueError, match="not a finished run: no config.json"):
        memory_reach_of_run(tmp_path, 3, 1, [], tmp_path / "x.json")
