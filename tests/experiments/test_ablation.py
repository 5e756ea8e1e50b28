"""The ablation runner: cells (schemes, variants, sweep), table and trade-off assembly, bootstrap
vs sft and a reference row, resume; and one real run through the sids/sft base and the rl stage
on a tiny synthetic world, with a variant row, a reference and the exported results file."""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import ConfigDict

from sgrec_jax.core.files import write_json
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
from sgrec_jax.stages import ablation, cell_archive
from sgrec_jax.stages.runs import parse_sweep
from sgrec_jax.stages.variants import parse_variant
from sgrec_jax.train.evaluate import Rankings
from tests.stages.test_rl import RL_RESULTS
from tests.stages.test_rl import tiny_config as tiny_rl_config
from tests.stages.test_sft import tiny_config

# Row means of (eCPM@10, semantic@10): sft is the table's minimum, so the reference point.
POINTS = {"sft": (1.0, 1.0), "popo": (3.0, 3.0), "weighted_sum_w0": (1.5, 4.0),
          "weighted_sum_w0.5": (2.5, 2.5), "weighted_sum_w1": (4.0, 1.5)}
TRUTH = {"sft": (0.2, 0.5), "popo": (0.6, 0.7), "weighted_sum_w0": (0.3, 0.9),
         "weighted_sum_w0.5": (0.5, 0.6), "weighted_sum_w1": (0.8, 0.4)}
SWEEP_ROWS = ["weighted_sum_w0", "weighted_sum_w0.5", "weighted_sum_w1"]
USERS = 20
ROOT = pathlib.Path(__file__).resolve().parents[2]


def cell_results(name, seed):
    """A results.json of the rl stage; the two seeds straddle the row means by ±0.5 / ±0.1."""
    sign = 1.0 if seed else -1.0
    (ecpm, semantic), (business, relevance) = POINTS[name], TRUTH[name]
    hits = hit_users(name)
    return {
        "rl/recall@5": hits / USERS, "rl/ndcg@5": hits / USERS, "rl/recall@10": hits / USERS,
        "rl/ndcg@10": hits / USERS, "rl/valid_rate": 1.0, "rl/sign_agreement": 0.5,
        "rl/ecpm@10": ecpm + 0.5 * sign, "rl/semantic@10": semantic + 0.1 * sign,
        "rl/true_business@10": business, "rl/true_relevance@10": relevance,
        "stages": ["rl"],
    }


def hit_users(name):
    return 15 if name == "popo" else 5


def save_rankings(directory, name):
    """Users hit_users(name) first users rank their target first; the rest miss it."""
    users = np.arange(USERS)[::-1].copy()  # saved out of order: pairing sorts by user
    targets = users + 100
    items = np.tile(np.arange(10), (USERS, 1))
    items[users < hit_users(name), 0] = targets[users < hit_users(name)]
    directory.mkdir(parents=True)
    Rankings(users, targets, items, np.zeros((USERS, 10), np.float32)).save(
        directory / "test_rankings.npz"
    )


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ablation")
    results = {}
    for name in POINTS:
        for seed in (0, 1):
            directory = workdir / "cells" / name / f"seed_{seed}"
            save_rankings(directory / "rl", name)
            results.setdefault(name, {})[seed] = cell_results(name, seed)
            write_json(directory / "results.json", results[name][seed])
    text = ablation.summarize(str(workdir), results, SWEEP_ROWS, num_resamples=500)
    return workdir, text


@pytest.fixture(scope="module")
def summary_with_reference(summary, tmp_path_factory):
    """The same finished cells summarised with popo as the reference row."""
    workdir, _ = summary
    copy = tmp_path_factory.mktemp("ablation_reference")
    shutil.copytree(workdir / "cells", copy / "cells")
    results = {name: {seed: cell_results(name, seed) for seed in (0, 1)} for name in POINTS}
    text = ablation.summarize(str(copy), results, SWEEP_ROWS, reference="popo",
                              num_resamples=500)
    return copy, text


ANCHOR = "anchored:rl.estimator=single;rl.channels=('ecpm',);rl.nll_weight=0.5"
CONTROL = "sft_continued:rl.pg_weight=0;rl.nll_weight=1;rl.beta=0"


def test_plan_cells_names_schemes_then_sweep():
    cells = ablation.plan_cells(["sft", "popo"], [0.0, 0.25, 1.0])
    assert [c.name for c in cells] == [
        "sft", "popo", "weighted_sum_w0", "weighted_sum_w0.25", "weighted_sum_w1"
    ]
    assert ablation.cell_dir("/d", cells[3], 2) == "/d/cells/weighted_sum_w0.25/seed_2"
    with pytest.raises(ValueError, match="cells repeat"):
        ablation.plan_cells(["popo", "popo"], [])


def test_variants_are_rows_between_the_schemes_and_the_sweep():
    variants = [parse_variant(CONTROL), parse_variant(ANCHOR)]
    cells = ablation.plan_cells(["sft", "popo"], [1.0], variants)
    assert [c.name for c in cells] == ["sft", "popo", "sft_continued", "anchored",
                                       "weighted_sum_w1"]
    assert ablation.cell_dir("/d", cells[2], 1) == "/d/cells/sft_continued/seed_1"
    with pytest.raises(ValueError, match="cells repeat"):
        ablation.plan_cells(["popo"], [], [parse_variant("popo:rl.beta=0")])


@pytest.mark.parametrize("spec, message", [
    ("x:sft.num_steps=3", r"variant 'x', field 'sft.num_steps': a cell runs only the rl stage "
                          r"from the shared SFT base, so a variant may change only rl\.\*, "
                          r"eval\.\* fields"),
    ("x:seed=3", "variant 'x', field 'seed': a cell runs only the rl stage"),
    ("x:rl.init_workdir=/other", "variant 'x', field 'rl.init_workdir': the ablation sets it"),
    ("sft:rl.beta=0", "variant 'sft': the name is the start policy's row"),
])
def test_variant_fields_outside_the_rl_cell_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        ablation.plan_cells(["sft"], [], [parse_variant(spec)])


def test_variant_cells_run_the_config_with_their_overrides():
    config = tiny_rl_config()
    config.lock()
    control = ablation.cell_config(config, ablation.Cell(None, variant=parse_variant(CONTROL)),
                                   1, "/sft")
    assert (control.seed, control.stages, control.rl.init_workdir) == (1, ("rl",), "/sft")
    assert (control.rl.pg_weight, control.rl.nll_weight, control.rl.beta) == (0.0, 1.0, 0.0)
    assert control.rl.estimator == config.rl.estimator  # not overridden: the config's
    assert control.rl.num_steps == config.rl.num_steps
    anchored = ablation.cell_config(config, ablation.Cell(None, variant=parse_variant(ANCHOR)),
                                    0, "/sft")
    assert anchored.rl.estimator == "single" and anchored.rl.channels == ("ecpm",)
    assert anchored.rl.nll_weight == 0.5 and config.rl.nll_weight == 0.0  # config untouched
    for spec, message in [
        ("x:rl.no_such_field=1", "variant 'x', field 'rl.no_such_field': no such field"),
        ("x:rl.beta=high", "variant 'x', field 'rl.beta': the field is float"),
    ]:
        with pytest.raises(ValueError, match=message):
            ablation.cell_config(config, ablation.Cell(None, variant=parse_variant(spec)), 0,
                                 "/sft")


def test_bad_variants_fail_before_anything_runs(tmp_path):
    config = tiny_rl_config()
    ran = []

    def run(cell_config, directory):
        ran.append(directory)
        return {}

    for spec, message in [
        ("x:rl.estimator=nope", "cell x: .*nope"),
        ("x:rl.nll_weight=-1", "cell x: rl: need pg_weight >= 0 and nll_weight >= 0"),
        ("x:rl.no_such_field=1", "variant 'x', field 'rl.no_such_field'"),
    ]:
        cells = ablation.plan_cells(["sft"], [], [parse_variant(spec)])
        with pytest.raises(ValueError, match=message):
            ablation.run_cells(config, str(tmp_path), cells, [0], run=run)
    assert ran == [] and not (tmp_path / "sft_base").exists()


def test_the_reference_must_be_another_row():
    cells = ablation.plan_cells(["sft", "popo"], [], [parse_variant(CONTROL)])
    assert ablation.check_reference(cells, "sft_continued") == "sft_continued"
    assert ablation.check_reference(cells, "") is None
    assert ablation.check_reference(cells, None) is None
    with pytest.raises(ValueError, match=r"--reference=nope is not a row \(sft, popo, "
                                         r"sft_continued\)"):
        ablation.check_reference(cells, "nope")
    with pytest.raises(ValueError, match="every row is compared with sft already"):
        ablation.check_reference(cells, "sft")


def test_sweep_weighs_business_by_w_and_semantic_by_one_minus_w():
    options = ConfigDict(ablation.sweep_weights(("ecpm", "psj"), 0.25))  # as a cell stores it
    channels = [ChannelSpec("ecpm", 0.0, 100.0, "business"), ChannelSpec("psj", 0.0, 1.0,
                "semantic"), ChannelSpec("true_ctr", 0.0, 1.0, "truth")]
    # Valid options for the estimator (it rejects unknown names), weights by channel name.
    estimator = ESTIMATORS.build("weighted_sum", channels, **options)
    assert dict(estimator.options["weights"]) == {"ecpm": 0.25, "psj": 0.75}
    with pytest.raises(ValueError, match="two channels"):
        ablation.sweep_weights(("ecpm",), 0.5)


def test_cell_configs_keep_estimator_options_by_name():
    """The rl stage reads rl.estimator_options[rl.estimator]: a cell must fill that entry."""
    config = tiny_rl_config()
    config.rl.estimator_options.popo_light.w_min = 0.1
    config.rl.estimator_options.weighted_sum.block_b = 4
    config.lock()
    popo = ablation.cell_config(config, ablation.Cell("popo_light"), 1, "/sft")
    assert (popo.seed, popo.stages, popo.rl.init_workdir) == (1, ("rl",), "/sft")
    assert popo.rl.estimator == "popo_light" and popo.rl.estimator_options.popo_light.w_min == 0.1
    sweep = ablation.cell_config(config, ablation.Cell("weighted_sum", 0.25), 0, "/sft")
    options = sweep.rl.estimator_options.weighted_sum
    assert dict(options.weights) == {"ecpm": 0.25, "emb_cosine": 0.75} and options.block_b == 4
    assert ablation.cell_config(config, ablation.Cell("sft"), 0, "/sft").rl.num_steps == 0


def test_table_has_mean_and_std_of_every_metric(summary):
    workdir, text = summary
    with open(workdir / "ablation.csv") as f:
        rows = {row["system"]: row for row in csv.DictReader(f)}
    assert list(rows) == list(POINTS)
    popo = rows["popo"]
    assert popo["num_seeds"] == "2"
    assert float(popo["ecpm@10_mean"]) == pytest.approx(3.0)
    assert float(popo["ecpm@10_std"]) == pytest.approx(0.5 * np.sqrt(2))
    assert float(popo["semantic@10_std"]) == pytest.approx(0.1 * np.sqrt(2))
    assert float(popo["recall@10_mean"]) == pytest.approx(0.75)
    assert float(popo["true_relevance@10_mean"]) == pytest.approx(0.7)
    assert "| popo | 2 | 0.7500 ± 0.0000 |" in text
    assert (workdir / "ablation.md").read_text() == text


def test_hypervolumes_use_the_table_minimum_as_reference(summary):
    workdir, text = summary
    tradeoff = json.loads((workdir / "ablation.json").read_text())["tradeoff"]
    assert tradeoff["reference_point"] == {"ecpm@10": 1.0, "semantic@10": 1.0}
    # Sweep relative to (1, 1): (0.5, 3), (1.5, 1.5), (3, 0.5) -> 1.5 + 1.5 + 0.75.
    assert tradeoff["sweep_hv"] == pytest.approx(3.75)
    assert tradeoff["box_area"] == pytest.approx(9.0)
    popo, sft = tradeoff["rows"]["popo"], tradeoff["rows"]["sft"]
    assert popo["hv"] == pytest.approx(4.0) and popo["hv_norm"] == pytest.approx(4 / 9)
    # With popo's (2, 2): 3 x 0.5 + 2 x 1.5 + 0.5 x 1 = 5, so it adds 1.25 to the sweep.
    assert popo["hv_gain"] == pytest.approx(1.25)
    assert not popo["dominated_by_sweep"] and popo["on_table_front"]
    assert sft["hv"] == 0.0 and sft["hv_gain"] == 0.0
    assert sft["dominated_by_sweep"] and not sft["on_table_front"]
    assert "HV 3.75 (0.4167 of the table's box)" in text
    assert (workdir / "tradeoff.png").stat().st_size > 1000
    assert (workdir / "tradeoff.svg").stat().st_size > 1000


def test_ground_truth_utility_is_normalised_over_the_rows(summary):
    workdir, text = summary
    truth = json.loads((workdir / "ablation.json").read_text())["truth"]
    popo = truth["popo"]
    # business (0.6 - 0.2) / 0.6, relevance (0.7 - 0.4) / 0.5
    assert popo["business_norm"] == pytest.approx(2 / 3)
    assert popo["relevance_norm"] == pytest.approx(0.6)
    assert popo["utility"] == pytest.approx((2 / 3 + 0.6) / 2)
    assert popo["true_hv"] == pytest.approx(0.4)
    assert truth["weighted_sum_w1"]["business_norm"] == 1.0
    assert "## Ground-truth utility" in text


def test_front_gap_is_the_distance_to_the_oracle_front_in_shared_units():
    results = {name: {0: cell_results(name, 0)} for name in TRUTH}
    table = ablation.ablation_table(results)
    front = np.array([[0.9, 0.4], [0.3, 1.0]])  # widens the span: business 0.2-0.9, rel. 0.4-1
    truth = ablation.truth_summary(table, front)
    popo = truth["popo"]  # normalised (4/7, 1/2); the front at (1, 0) and (1/7, 1)
    assert popo["business_norm"] == pytest.approx(4 / 7)
    assert popo["front_gap"] == pytest.approx(min(1 - 4 / 7, 1 - 1 / 2))
    # weighted_sum_w0 (1/7, 5/6) falls short of (1/7, 1) by 1/6; w1 (6/7, 0) of (1, 0) by 1/7.
    assert truth["weighted_sum_w0"]["front_gap"] == pytest.approx(1 / 6)
    assert truth["weighted_sum_w1"]["front_gap"] == pytest.approx(1 / 7)
    assert all(0 < r["front_gap"] for r in truth.values())
    assert "Closest to the oracle front: weighted_sum_w1" in ablation._truth_markdown(truth)
    assert np.isnan(ablation.truth_summary(table)["popo"]["front_gap"])


def test_bootstrap_pairs_each_row_with_sft_user_by_user(summary):
    workdir, text = summary
    boot = json.loads((workdir / "bootstrap.json").read_text())
    assert set(boot) == set(POINTS) - {"sft"}
    popo = boot["popo"]
    assert (popo["a"], popo["b"]) == ("popo", "sft")
    assert set(popo["results"]) == {"seed_0", "seed_1", "seed_mean"}
    recall = popo["results"]["seed_mean"]["recall@10"]
    assert recall["mean_diff"] == pytest.approx(0.5) and recall["ci_low"] > 0
    assert recall["num_users"] == USERS
    same = boot["weighted_sum_w0"]["results"]["seed_0"]["ndcg@10"]
    assert same["mean_diff"] == 0.0 and same["p_value_two_sided"] == 1.0
    assert "| popo | seed_mean | recall@10 | +0.5000 |" in text
    assert "## popo" in (workdir / "bootstrap.md").read_text()


def test_a_reference_row_is_bootstrapped_against_too(summary_with_reference):
    workdir, text = summary_with_reference
    against_popo = json.loads((workdir / "bootstrap_popo.json").read_text())
    assert set(against_popo) == set(POINTS) - {"sft", "popo"}  # popo - sft is in bootstrap.json
    w0 = against_popo["weighted_sum_w0"]
    assert (w0["a"], w0["b"]) == ("weighted_sum_w0", "popo")
    recall = w0["results"]["seed_mean"]["recall@10"]
    assert recall["mean_diff"] == pytest.approx(-0.5) and recall["ci_high"] < 0
    assert set(json.loads((workdir / "bootstrap.json").read_text())) == set(POINTS) - {"sft"}
    entries = json.loads((workdir / "ablation.json").read_text())["bootstrap"]
    pairs = {(e["a"], e["b"]) for e in entries}
    assert pairs == ({(name, "sft") for name in POINTS if name != "sft"}
                     | {(name, "popo") for name in POINTS if name not in ("sft", "popo")})
    entry = next(e for e in entries if (e["a"], e["b"], e["metric"], e["seeds"])
                 == ("weighted_sum_w0", "popo", "recall@10", "seed_mean"))
    assert entry["diff"] == pytest.approx(-0.5) and entry["resamples"] == 500
    assert "## Paired bootstrap against sft (details in bootstrap.md)" in text
    assert "## Paired bootstrap against popo (details in bootstrap_popo.md)" in text
    assert "| weighted_sum_w0 | seed_mean | recall@10 | -0.5000 |" in text
    assert "| system | seeds | metric | system - popo |" in text


def test_cells_without_diagnostics_are_named(summary):
    _, text = summary
    assert "## Ranking diagnostics" not in text
    assert f"No diagnostics (finished before the rl stage reported them): {', '.join(POINTS)}." \
        in text


def test_sft_base_runs_once_and_resumes(tmp_path):
    """The base stages run for real in DIR/sft_base; a rerun skips them, another config fails."""
    config = tiny_config()
    config.stages = ("sids",)
    directory = ablation.prepare_sft(config, str(tmp_path))
    assert directory == str(tmp_path / "sft_base")
    results = tmp_path / "sft_base" / "results.json"
    stamp = results.stat().st_mtime_ns
    config.sft.max_steps_per_run = 3  # run control: still the same run
    assert ablation.prepare_sft(config, str(tmp_path)) == directory
    assert results.stat().st_mtime_ns == stamp
    config.sid.codebook_size = 9
    with pytest.raises(ValueError, match=r"fields sid.codebook_size differ"):
        ablation.prepare_sft(config, str(tmp_path))


def test_sft_per_seed_starts_each_seed_from_its_own_base(tmp_path):
    """--sft_per_seed: base stages per seed (that seed), cells of seed s from base s, one
    rewards folder for all; without base stages it is refused before anything runs."""
    config = tiny_rl_config()
    assert set(ablation.BASE_STAGES) <= set(config.stages)
    calls = []

    def run(run_config, directory):
        calls.append((os.path.relpath(directory, tmp_path), run_config.seed,
                      tuple(run_config.stages), run_config.rl.init_workdir,
                      run_config.rl.rewards_workdir))
        return {}

    cells = ablation.plan_cells(["sft", "a2po"], [], [])
    ablation.run_cells(config, str(tmp_path), cells, [0, 2], run=run, sft_per_seed=True)
    bases = {s: str(tmp_path / "sft_bases" / f"seed_{s}") for s in (0, 2)}
    assert calls == [
        ("sft_bases/seed_0", 0, ("sids", "sft"), config.rl.init_workdir, ""),
        ("cells/sft/seed_0", 0, ("rl",), bases[0], str(tmp_path)),
        ("cells/a2po/seed_0", 0, ("rl",), bases[0], str(tmp_path)),
        ("sft_bases/seed_2", 2, ("sids", "sft"), config.rl.init_workdir, ""),
        ("cells/sft/seed_2", 2, ("rl",), bases[2], str(tmp_path)),
        ("cells/a2po/seed_2", 2, ("rl",), bases[2], str(tmp_path)),
    ]
    # Shared base (the default): one base, every seed's cells from it, rewards beside it.
    calls.clear()
    ablation.run_cells(config, str(tmp_path / "shared"), cells, [0, 2], run=run)
    base = str(tmp_path / "shared" / "sft_base")
    assert [c[0] for c in calls] == ["shared/sft_base", *(f"shared/cells/{n}/seed_{s}"
                                     for s in (0, 2) for n in ("sft", "a2po"))]
    assert {c[3] for c in calls[1:]} == {base} and {c[4] for c in calls} == {""}
    calls.clear()
    config.stages = ("rl",)
    config.rl.init_workdir = "/somewhere/sft"
    with pytest.raises(ValueError, match="--sft_per_seed trains one SFT base per seed"):
        ablation.run_cells(config, str(tmp_path / "x"), cells, [0], run=run, sft_per_seed=True)
    assert calls == []


def test_cli_summarizes_the_finished_cells(summary, tmp_path):
    workdir, text = summary
    copy = tmp_path / "copy"
    for path in workdir.glob("cells/*/seed_*/**/*"):
        if path.is_file():
            target = copy / path.relative_to(workdir)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (copy / "cells" / "weighted_sum_w1" / "seed_1" / "results.json").unlink()  # unfinished
    done = subprocess.run(
        [sys.executable, "-m", "experiments.ablation", f"--workdir={copy}", "--summarize_only",
         "--schemes=sft,popo,single", "--sweep=0,0.5,1", "--seeds=0,1", "--num_resamples=500",
         "--reference=popo"],
        cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| weighted_sum_w1 | 1 |" in done.stdout and "| single |" not in done.stdout
    assert "| popo | 2 |" in done.stdout
    assert done.stdout.strip() == (copy / "ablation.md").read_text().strip()
    assert (copy / "tradeoff.png").exists()
    assert "## Paired bootstrap against popo" in done.stdout
    assert (copy / "bootstrap_popo.json").exists()


@pytest.mark.parametrize("sweep", [["2"], ["0.5", "0.5"], ["x"]])
def test_bad_sweep_weights_are_refused(sweep):
    with pytest.raises(ValueError, match="--sweep must be"):
        parse_sweep(sweep)


# -- end to end: sft_base, then the rl stage in every cell ----------------------------------------

# sft, a2po, sft_continued (SFT continued by NLL alone, the reference), weighted_sum_w1
REAL_VARIANTS = [parse_variant(CONTROL)]
REAL_CELLS = ablation.plan_cells(["sft", "a2po"], [1.0], REAL_VARIANTS)
REAL_SWEEP = ["weighted_sum_w1"]
REFERENCE = "sft_continued"


def finished_files(workdir):
    """mtime of every results.json (sft_base, cells) and reward-model report, by path."""
    paths = [*workdir.glob("**/results.json"), *workdir.glob("**/rewards/*/report.json")]
    return {str(p.relative_to(workdir)): p.stat().st_mtime_ns for p in paths}


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Runs the ablation for real (2 RL steps per cell, seed 0), summarises it against sft and
    sft_continued with the results file exported to DIR/export.json, then reruns it."""
    workdir = tmp_path_factory.mktemp("real_ablation")
    config = tiny_rl_config(num_steps=2, eval_every=2)
    results = ablation.run_cells(config, str(workdir), REAL_CELLS, [0])
    text = ablation.summarize(str(workdir), results, REAL_SWEEP, reference=REFERENCE,
                              variants=REAL_VARIANTS, export=str(workdir / "export.json"),
                              num_resamples=200)
    first = finished_files(workdir)
    again = ablation.run_cells(config, str(workdir), REAL_CELLS, [0])
    return workdir, results, text, first, again


def test_real_cells_run_the_rl_stage_from_the_shared_sft_base(real):
    workdir, results, _, _, _ = real
    assert list(results) == [c.name for c in REAL_CELLS]
    base = json.loads((workdir / "sft_base" / "results.json").read_text())
    assert base["stages"] == ["sids", "sft"]
    for name, by_seed in results.items():
        result = by_seed[0]
        assert result["stages"] == ["rl"]
        for key in RL_RESULTS:
            assert np.isfinite(result[key]), (name, key)
        assert result["rl/last_step"] == (0 if name == "sft" else 2)
        stored = json.loads((workdir / "cells" / name / "seed_0" / "results.json").read_text())
        assert stored["rl/ndcg@10"] == result["rl/ndcg@10"]
    # The sft row is the base's own policy under the same beam search.
    assert results["sft"][0]["rl/recall@10"] == base["recall@10"]


def test_sweep_cell_trains_with_its_fixed_weights(real):
    workdir, _, _, _, _ = real
    cell = workdir / "cells" / "weighted_sum_w1" / "seed_0"
    config = json.loads((cell / "config.json").read_text())["rl"]
    assert config["estimator"] == "weighted_sum"
    assert config["estimator_options"]["weighted_sum"]["weights"] == {
        "ecpm": 1.0, "emb_cosine": 0.0
    }
    records = [r for r in map(json.loads, (cell / "rl" / "metrics.jsonl").read_text().splitlines())
               if "train/loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:
        assert (record["train/weights/ecpm"], record["train/weights/emb_cosine"]) == (1.0, 0.0)


def test_reward_models_are_trained_once_in_the_sft_base(real):
    workdir, _, _, _, _ = real
    rewards = workdir / "sft_base" / "rewards"
    # reward_seed 0 + each channel's seed_offset; ctr_steps 20, validated every 10.
    assert sorted(p.parent.name for p in rewards.glob("*/report.json")) == [
        "ecpm_eval_seed1000", "ecpm_seed0"
    ]
    for name in ("ecpm_eval_seed1000", "ecpm_seed0"):
        lines = (rewards / name / "metrics.jsonl").read_text().splitlines()
        assert [r["step"] for r in map(json.loads, lines) if "valid/auc" in r] == [10, 20], name
    assert list(rewards.glob("text_emb_*.npy"))
    assert not list(workdir.glob("cells/**/rewards")), "a cell trained its own reward models"


def test_real_summary_has_every_row_ground_truth_and_bootstrap(real):
    workdir, results, text, _, _ = real
    for name in ("ablation.md", "ablation.csv", "ablation.json", "tradeoff.png",
                 "bootstrap.md", "bootstrap.json"):
        assert (workdir / name).stat().st_size > 0, name
    with open(workdir / "ablation.csv") as f:
        rows = {row["system"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["sft", "a2po", "sft_continued", "weighted_sum_w1"]
    for name in ("true_business@10_mean", "true_relevance@10_mean", "ecpm@10_mean"):
        assert all(row[name] for row in rows.values()), name
    assert all(f"| {name} | 1 |" in text for name in rows)
    assert "## Ground-truth utility" in text
    # The rl stage traced the oracle front; no row can beat its ends on their own objective.
    front = json.loads((workdir / "cells" / "sft" / "seed_0" / "rl" / "true_front.json")
                       .read_text())
    truth = json.loads((workdir / "ablation.json").read_text())["truth"]
    for name, row in truth.items():
        assert row["true_business@10"] <= max(front["true_business@10"]) + 1e-6, name
        assert row["true_relevance@10"] <= max(front["true_relevance@10"]) + 1e-6, name
        assert 0.0 <= row["front_gap"] <= np.sqrt(2), name
    assert "Closest to the oracle front" in text
    assert (workdir / "truth_tradeoff.png").stat().st_size > 1000
    boot = json.loads((workdir / "bootstrap.json").read_text())
    assert set(boot) == {"a2po", "sft_continued", "weighted_sum_w1"}
    assert boot["a2po"]["results"]["seed_0"]["recall@10"]["num_users"] == 60
    # eCPM@10, semantic@10 and the truth are paired user by user too, from rl/test_rewards.npz.
    paired = boot["a2po"]["results"]["seed_0"]
    assert set(paired) == {"recall@10", "ndcg@10", "ecpm@10", "semantic@10",
                           "true_business@10", "true_relevance@10"}
    assert paired["ecpm@10"]["mean_a"] == pytest.approx(results["a2po"][0]["rl/ecpm@10"])
    assert paired["semantic@10"]["mean_b"] == pytest.approx(results["sft"][0]["rl/semantic@10"])


def test_the_variant_cell_continues_sft_by_nll_alone(real):
    workdir, results, _, _, _ = real
    cell = workdir / "cells" / "sft_continued" / "seed_0"
    config = json.loads((cell / "config.json").read_text())
    assert (config["rl"]["pg_weight"], config["rl"]["nll_weight"], config["rl"]["beta"]) == (
        0.0, 1.0, 0.0)
    assert config["rl"]["init_workdir"] == str(workdir / "sft_base")
    records = [r for r in map(json.loads, (cell / "rl" / "metrics.jsonl").read_text()
                              .splitlines()) if "train/loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    assert results["sft_continued"][0]["rl/last_step"] == 2


def test_real_rows_carry_the_ranking_diagnostics(real):
    workdir, results, text, _, _ = real
    for name, by_seed in results.items():
        for metric in ablation.DIAGNOSTICS_TABLE:
            assert f"rl/{metric}" in by_seed[0], (name, metric)
    assert "## Ranking diagnostics" in text and "No diagnostics" not in text
    assert "diag/recall@10\\|pop_q5" in text  # escaped "|" inside the markdown cell
    with open(workdir / "diagnostics.csv") as f:
        rows = {row["system"]: row for row in csv.DictReader(f)}
    assert list(rows) == [c.name for c in REAL_CELLS]
    assert float(rows["sft"]["diag/recall@10|pop_q1_mean"]) == pytest.approx(
        results["sft"][0]["rl/diag/recall@10|pop_q1"], nan_ok=True)


def test_real_rows_are_bootstrapped_against_sft_and_the_reference(real):
    workdir, _, text, _, _ = real
    against = json.loads((workdir / f"bootstrap_{REFERENCE}.json").read_text())
    assert set(against) == {"a2po", "weighted_sum_w1"}
    assert against["a2po"]["b"] == REFERENCE
    assert set(against["a2po"]["results"]["seed_0"]) >= {"recall@10", "ndcg@10", "ecpm@10"}
    assert f"## Paired bootstrap against {REFERENCE}" in text
    assert "Variants (the config with these overrides):" in text
    assert f"- sft_continued: {REAL_VARIANTS[0].describe()}" in text


def test_the_exported_results_file_has_the_documented_structure(real):
    """benchmarks.md "Results files": dataset, split, users, items, systems (seeds, mean, std,
    per_seed), bootstrap entries (a, b, metric, diff, ci95, resamples), provenance."""
    workdir, results, _, _, _ = real
    data = json.loads((workdir / "export.json").read_text())
    assert set(data) == {"dataset", "split", "users", "items", "systems", "bootstrap",
                         "provenance", "cells"}
    assert (data["dataset"], data["split"], data["users"]) == ("synthetic", "test", 60)
    assert data["items"] == 150
    assert set(data["systems"]) == {c.name for c in REAL_CELLS}  # (write_json sorts keys)
    for name, system in data["systems"].items():
        assert set(system) == {"seeds", "mean", "std", "per_seed"} and system["seeds"] == [0]
        for metric in ("recall@5", "ndcg@5", "recall@10", "ndcg@10", "coverage@10",
                       "ecpm@10", "semantic@10", "diag/recall@10|pop_q3"):
            assert metric in system["mean"], (name, metric)
        assert system["mean"]["ndcg@10"] == results[name][0]["rl/ndcg@10"]
        assert system["std"]["ndcg@10"] is None  # one seed
        assert system["per_seed"] == [system["mean"]]
    pairs = {(e["a"], e["b"]) for e in data["bootstrap"]}
    assert pairs == {("a2po", "sft"), ("sft_continued", "sft"), ("weighted_sum_w1", "sft"),
                     ("a2po", REFERENCE), ("weighted_sum_w1", REFERENCE)}
    against = json.loads((workdir / f"bootstrap_{REFERENCE}.json").read_text())
    for entry in data["bootstrap"]:
        assert set(entry) == {"a", "b", "metric", "diff", "ci95", "resamples", "seeds"}
        assert entry["resamples"] == 200 and entry["seeds"] == "seed_0"
        low, high = entry["ci95"]
        assert low <= entry["diff"] <= high
        if entry["b"] == REFERENCE:
            r = against[entry["a"]]["results"]["seed_0"][entry["metric"]]
            assert entry["diff"] == pytest.approx(r["mean_a"] - r["mean_b"])
    provenance = data["provenance"]
    assert {"commit", "packages", "data_hashes", "config", "sources"} <= set(provenance)
    assert provenance["sources"]["a2po"] == str(workdir / "cells" / "a2po")
    cells = data["cells"]
    assert cells["sft"]["num_steps"] == 0 and cells["a2po"]["estimator"] == "a2po"
    assert (cells[REFERENCE]["pg_weight"], cells[REFERENCE]["nll_weight"]) == (0.0, 1.0)
    assert cells[REFERENCE]["overrides"] == dict(REAL_VARIANTS[0].overrides)
    assert cells["weighted_sum_w1"]["estimator_options"]["weights"] == {
        "ecpm": 1.0, "emb_cosine": 0.0}
    assert "overrides" not in cells["a2po"]


def test_export_names_rename_rows_in_the_results_file_only(real, tmp_path):
    """--export_names gives rows benchmarks.md's names (single:rank, ...) in the results file:
    the same systems, bootstrap entries and cell records under the new names, each renamed
    record naming its cell; the tables keep the cells' names."""
    workdir, results, _, _, _ = real
    copy = tmp_path / "ablation"
    shutil.copytree(workdir, copy)
    names = {"a2po": "a2po:ecpm+emb_cosine", REFERENCE: "sft_nll"}
    text = ablation.summarize(str(copy), results, REAL_SWEEP, reference=REFERENCE,
                              variants=REAL_VARIANTS, export=str(copy / "named.json"),
                              num_resamples=200, export_names=names)
    plain = json.loads((workdir / "export.json").read_text())
    named = json.loads((copy / "named.json").read_text())
    row = lambda cell: names.get(cell, cell)  # noqa: E731
    assert set(named["systems"]) == {row(cell) for cell in plain["systems"]}
    for cell, system in plain["systems"].items():
        assert named["systems"][row(cell)] == system
    assert sorted((e["a"], e["b"], e["metric"], e["diff"]) for e in named["bootstrap"]) == sorted(
        (row(e["a"]), row(e["b"]), e["metric"], e["diff"]) for e in plain["bootstrap"])
    for cell, record in plain["cells"].items():
        expected = {**record, "cell": cell} if cell in names else record
        assert named["cells"][row(cell)] == expected
    assert set(named["provenance"]["sources"]) == {row(c) for c in plain["systems"]}
    assert "| a2po |" in text and "a2po:ecpm+emb_cosine" not in text


def test_export_names_are_checked_against_the_rows():
    cells = ablation.plan_cells(["sft", "single", "a2po"], [], [])
    assert ablation.parse_export_names(["single=single:rank", " a2po = a2po:rank+psj"], cells) == {
        "single": "single:rank", "a2po": "a2po:rank+psj"}
    for items, message in ((["popo=popo:rank"], "'popo' is not a row"),
                           (["single"], "is not CELL=ROW"), (["single="], "is not CELL=ROW"),
                           (["single=x", "single=y"], "named twice"),
                           (["single=sft"], "several rows would be exported as sft")):
        with pytest.raises(ValueError, match=message):
            ablation.parse_export_names(items, cells)


def test_rewards_of_older_cells_are_backfilled_from_their_rankings(real, tmp_path):
    from sgrec_jax.stages.rl import backfill_test_rewards

    workdir, results, _, _, _ = real
    cell = tmp_path / "a2po"
    shutil.copytree(workdir / "cells" / "a2po" / "seed_0", cell)
    saved = dict(np.load(cell / "rl" / "test_rewards.npz"))
    (cell / "rl" / "test_rewards.npz").unlink()
    assert backfill_test_rewards(str(cell))
    again = dict(np.load(cell / "rl" / "test_rewards.npz"))
    assert set(again) == set(saved) == {"users_u", "ecpm@10", "semantic@10",
                                        "true_business@10", "true_relevance@10"}
    for name, values in saved.items():
        np.testing.assert_allclose(again[name], values, rtol=1e-6, err_msg=name)
    assert np.nanmean(again["ecpm@10"]) == pytest.approx(results["a2po"][0]["rl/ecpm@10"])
    assert not backfill_test_rewards(str(cell))  # already there


def test_a_finished_cell_resumes_after_an_option_was_added(real):
    """A cell that finished before an estimator option existed (its config.json lacks it) is
    adopted when the option holds its default, and refused when the option was changed."""
    workdir = real[0]
    path = pathlib.Path(ablation.cell_dir(str(workdir), ablation.Cell("a2po"), 0)) / "config.json"
    text = path.read_text()
    stored = json.loads(text)
    option = sorted(stored["rl"]["estimator_options"]["a2po"])[0]
    del stored["rl"]["estimator_options"]["a2po"][option]
    path.write_text(json.dumps(stored))
    try:
        config = tiny_rl_config(num_steps=2, eval_every=2)
        before = finished_files(workdir)
        with pytest.raises(ValueError, match=rf"fields rl.estimator_options.a2po.{option} differ"):
            ablation.run_cells(config, str(workdir), REAL_CELLS, [0])
        ablation.run_cells(config, str(workdir), REAL_CELLS, [0], defaults=config)
        assert finished_files(workdir) == before  # adopted: nothing ran again
        changed = config.copy_and_resolve_references()
        value = changed.rl.estimator_options.a2po[option]
        changed.rl.estimator_options.a2po[option] = (not value if isinstance(value, bool)
                                                     else value + 1)
        with pytest.raises(ValueError, match=rf"fields rl.estimator_options.a2po.{option} differ"):
            ablation.run_cells(changed, str(workdir), REAL_CELLS, [0], defaults=config)
    finally:
        path.write_text(text)


def test_a_rerun_skips_every_finished_cell(real):
    workdir, results, _, first, again = real
    for name, by_seed in again.items():
        for key in RL_RESULTS:
            assert by_seed[0][key] == results[name][0][key], (name, key)
    assert finished_files(workdir) == first
    assert len(first) == 1 + len(REAL_CELLS) + 2  # sft_base, the cells, two pCTR models


# -- the cell archive: cells run in several sessions or on another machine form one table -------


def never_run(run_config, directory):
    raise AssertionError(f"ran {directory}, which had finished")


def archive_finished(workdir, archive, cells=REAL_CELLS):
    """Archives the finished cells of `workdir` as the runner does (a rerun skips and archives
    them), returning what the archive holds."""
    config = tiny_rl_config(num_steps=2, eval_every=2)
    ablation.run_cells(config, str(workdir), cells, [0], run=never_run, archive=str(archive))
    return sorted(str(p.relative_to(archive)) for p in archive.rglob("*") if p.is_file())


def test_the_archive_tabulates_as_the_work_directory_did(real, tmp_path):
    """ARCHIVE holds only results, configs, top-10 rankings and rewards, yet summarising it gives
    the work directory's table, diagnostics and bootstrap entries; archiving again adds nothing."""
    workdir, results, _, _, _ = real
    archive = tmp_path / "archive"
    kept = archive_finished(workdir, archive)
    stamps = {p: p.stat().st_mtime_ns for p in archive.rglob("*") if p.is_file()}
    assert archive_finished(workdir, archive) == kept  # checked again, nothing rewritten
    assert {p: p.stat().st_mtime_ns for p in archive.rglob("*") if p.is_file()} == stamps
    assert kept == sorted(f"cells/{c.name}/seed_0/{f}" for c in REAL_CELLS for f in (
        "config.json", "results.json", "rl/test_rankings.npz", "rl/test_rewards.npz",
        "rl/true_front.json"))  # the synthetic world's oracle front
    assert np.load(archive / "cells" / "a2po" / "seed_0" / "rl" / "test_rankings.npz")[
        "items_uk"].shape[1] == 10
    again = ablation.load_finished(str(archive), REAL_CELLS, [0])
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)
    ablation.summarize(str(archive), again, REAL_SWEEP, reference=REFERENCE,
                       variants=REAL_VARIANTS, num_resamples=200)
    ours, theirs = (json.loads((d / "ablation.json").read_text()) for d in (archive, workdir))
    for key in ("table", "diagnostics", "bootstrap", "tradeoff", "truth"):
        assert ours[key] == theirs[key], key
    assert {e["metric"] for e in ours["bootstrap"]} >= {"recall@10", "ecpm@10"}


def copying_run(source_workdir, target_workdir, calls):
    """A stand-in for run_pipeline that "runs" a directory of target_workdir by copying the
    finished one at the same place in source_workdir, recording where."""
    def run(run_config, directory):
        relative = pathlib.Path(directory).relative_to(target_workdir)
        calls.append(str(relative))
        shutil.copytree(source_workdir / relative, directory, dirs_exist_ok=True)
        return json.loads((pathlib.Path(directory) / "results.json").read_text())
    return run


def test_restored_cells_run_nothing_and_a_missing_one_runs_with_its_base(real, tmp_path):
    """A fresh work directory elsewhere (the cells' rl.init_workdir names another sft_base path)
    takes every archived cell as finished: no SFT base, no cell runs. With one cell missing from
    the archive, the base and that cell run, and the cell is archived as it finishes."""
    workdir, results, _, _, _ = real
    archive = tmp_path / "archive"
    archive_finished(workdir, archive)
    config = tiny_rl_config(num_steps=2, eval_every=2)
    calls = []
    fresh = tmp_path / "elsewhere" / "fresh"
    restored = ablation.run_cells(config, str(fresh), REAL_CELLS, [0],
                                  run=copying_run(workdir, fresh, calls), archive=str(archive))
    assert calls == []
    assert json.dumps(restored, sort_keys=True) == json.dumps(results, sort_keys=True)
    assert not (fresh / "sft_base").exists()

    shutil.rmtree(archive / "cells" / "a2po")
    calls.clear()
    other = tmp_path / "other"
    again = ablation.run_cells(config, str(other), REAL_CELLS, [0],
                               run=copying_run(workdir, other, calls), archive=str(archive))
    # The new base's sft cell runs first and matches the archived one, then the missing cell.
    assert calls == ["sft_base", "cells/sft/seed_0", "cells/a2po/seed_0"]
    assert json.dumps(again, sort_keys=True) == json.dumps(results, sort_keys=True)
    assert (archive / "cells" / "a2po" / "seed_0" / "results.json").exists()


def test_a_retrained_base_that_differs_from_the_archived_one_is_refused(real, tmp_path):
    """A base trained again elsewhere whose sft cell tests differently (another machine) does
    not mix its cells with the archived ones: ValueError before any new cell runs, and the
    restored cells leave the work directory (the archive keeps them)."""
    workdir, _, _, _, _ = real
    archive = tmp_path / "archive"
    archive_finished(workdir, archive)
    shutil.rmtree(archive / "cells" / "a2po")
    config = tiny_rl_config(num_steps=2, eval_every=2)
    calls = []
    other = tmp_path / "other"
    copy = copying_run(workdir, other, calls)

    def other_machine(run_config, directory):
        result = copy(run_config, directory)
        if pathlib.Path(directory).parent.name == "sft":
            result["rl/recall@10"] += 0.001
            (pathlib.Path(directory) / "results.json").write_text(json.dumps(result))
        return result

    with pytest.raises(ValueError, match=r"seed 0: the SFT base .* is not the one .*rl/recall@10"):
        ablation.run_cells(config, str(other), REAL_CELLS, [0], run=other_machine,
                           archive=str(archive))
    assert calls == ["sft_base", "cells/sft/seed_0"]  # no new cell ran
    finished = sorted(str(p.relative_to(other / "cells")) for p in (other / "cells").rglob(
        "results.json"))
    assert finished == ["sft/seed_0/results.json"]  # this base's own
    assert (archive / "cells" / "sft_continued" / "seed_0" / "results.json").exists()


def test_archiving_another_run_of_an_archived_cell_is_refused(real, tmp_path):
    workdir, results, _, _, _ = real
    archive = tmp_path / "archive"
    archive_finished(workdir, archive, [ablation.Cell("a2po")])
    run = tmp_path / "run"
    shutil.copytree(workdir / "cells" / "a2po" / "seed_0", run)
    target = archive / "cells" / "a2po" / "seed_0"
    result = json.loads((run / "results.json").read_text())
    result["rl/recall@10"] += 0.01
    (run / "results.json").write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"other results than archived .*rl/recall@10"):
        cell_archive.archive_cell(run, target, "cell a2po/seed_0")
    shutil.copy(workdir / "cells" / "a2po" / "seed_0" / "results.json", run / "results.json")
    stored = json.loads((run / "config.json").read_text())
    stored["rl"]["learning_rate"] *= 2
    (run / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=r"is not the cell archived .*rl.learning_rate differ"):
        cell_archive.archive_cell(run, target, "cell a2po/seed_0")
    (run / "results.json").unlink()
    with pytest.raises(ValueError, match=r"results.json does not exist"):
        cell_archive.archive_cell(run, tmp_path / "new", "cell a2po/seed_0")
