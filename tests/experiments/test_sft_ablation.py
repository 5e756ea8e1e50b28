"""The recipe-ablation runner on a tiny synthetic world: rows, floors, bootstrap, results file,
resume, adopting a finished run through a symlink, and failing before any run."""

import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from sgrec_jax.stages import recipe_ablation
from sgrec_jax.stages.variants import parse_variants

ROOT = pathlib.Path(__file__).resolve().parents[2]
VARIANTS = ("base", "buckets:sft.length_buckets=(3,8)")
ROWS = ("base", "buckets", "item_transition", "popularity")
METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
RESAMPLES = 500

# The tiny SFT config with the counting floors, as a config file for the CLI too (it may not
# import this module: the CLI would then define its flags twice).
CONFIG_SOURCE = """
from tests.stages.test_sft import tiny_config


def get_config():
    config = tiny_config()
    config.stages = ("sids", "popularity", "item_transition", "sft")
    config.sft.eval_every = 12  # one validation per run keeps the test fast
    return config
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.py"
    path.write_text(CONFIG_SOURCE)
    return path


@pytest.fixture(scope="module")
def config(config_file):
    spec = importlib.util.spec_from_file_location("tiny_ablation_config", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, config):
    """Both variants run and summarised once for the whole module."""
    directory = tmp_path_factory.mktemp("ablation")
    runs = recipe_ablation.run_variants(config, str(directory), parse_variants(VARIANTS))
    recipe_ablation.summarize(str(directory), runs, num_resamples=RESAMPLES,
                              export=str(directory / "export" / "tiny.json"))
    return directory


def results(directory, name):
    return json.loads((directory / name / "results.json").read_text())


def exported(directory):
    return json.loads((directory / "export" / "tiny.json").read_text())


def stamps(directory):
    """mtimes of every run's results and training log (through symlinks)."""
    paths = [*directory.glob("*/results.json"), *directory.glob("*/sft/metrics.jsonl")]
    return {p: p.stat().st_mtime_ns for p in paths}


def test_each_variant_runs_in_its_own_directory_with_its_overrides(workdir):
    for name, buckets in (("base", []), ("buckets", [3, 8])):
        config = json.loads((workdir / name / "config.json").read_text())
        assert config["sft"]["length_buckets"] == buckets and config["seed"] == 0
    # Another batching trains another model.
    a, b = (np.load(workdir / name / "sft" / "test_rankings.npz")["items_uk"]
            for name in ("base", "buckets"))
    assert not np.array_equal(a, b)


def test_rows_are_the_variants_and_the_reference_runs_floors(workdir):
    data = exported(workdir)
    assert set(data) == {"dataset", "split", "users", "items", "systems", "variants",
                         "bootstrap", "provenance"}
    assert (data["split"], data["users"], data["items"]) == ("test", 60, 150)
    assert set(data["systems"]) == set(ROWS)
    base = results(workdir, "base")
    for name in ("base", "buckets"):
        entry, run = data["systems"][name], results(workdir, name)
        assert set(entry) == {"seeds", "mean", "std", "per_seed"} and entry["seeds"] == [0]
        for metric in (*METRICS, "coverage@10", "diag/recall@10|follows",
                       "diag/history_share@10", "diag/first_codes@10"):
            assert entry["mean"][metric] == pytest.approx(run[metric])
            assert entry["per_seed"][0][metric] == entry["mean"][metric]
            assert entry["std"][metric] is None  # one seed
        assert {k for k in entry["mean"] if k.startswith("diag/")} == {
            k for k in run if k.startswith("diag/")}
        assert entry["mean"]["best_step"] == run["sft/best_step"]
        assert entry["mean"]["last_step"] == 12
        assert entry["mean"]["parameters"] == run["sft/parameters"] > 0
        assert entry["mean"]["wall_seconds"] == pytest.approx(run["wall_seconds"])
        for column, key in (("examples_per_s", "sft/examples_per_s"),
                            ("train_seconds", "sft/train_seconds")):
            assert column in entry["mean"]
            assert entry["mean"][column] == (pytest.approx(run[key]) if key in run else None)
    for floor in ("item_transition", "popularity"):
        entry = data["systems"][floor]
        assert entry["mean"]["recall@10"] == pytest.approx(base[f"{floor}/recall@10"])
        assert entry["mean"]["diag/popular_share@10"] == pytest.approx(
            base[f"{floor}/diag/popular_share@10"])
        assert "examples_per_s" not in entry["mean"]  # the cost is the generator's
    assert data["variants"] == {"base": {}, "buckets": {"sft.length_buckets": [3, 8]}}


def test_bootstrap_compares_each_variant_with_the_reference_and_item_transition(workdir):
    data = exported(workdir)
    pairs = {(e["a"], e["b"], e["metric"], e["seeds"]) for e in data["bootstrap"]}
    assert pairs == {(a, b, m, "seed_0") for a, b in (("buckets", "base"),
                                                      ("base", "item_transition"),
                                                      ("buckets", "item_transition"))
                     for m in METRICS}
    for e in data["bootstrap"]:
        a = results(workdir, e["a"])
        b = results(workdir, "base")
        mean_b = b[e["metric"]] if e["b"] == "base" else b[f"{e['b']}/{e['metric']}"]
        # Per-user values recomputed from the saved rankings reproduce the runs' own means.
        assert e["diff"] == pytest.approx(a[e["metric"]] - mean_b)
        lo, hi = e["ci95"]
        assert lo <= e["diff"] <= hi and e["resamples"] == RESAMPLES


def test_tables_and_provenance(workdir):
    text = (workdir / "ablation.md").read_text()
    assert "- buckets: sft.length_buckets=(3,8)" in text and "- base: (config as given)" in text
    assert text.count("| base |") == 2 and text.count("| item_transition |") == 2
    assert "| row | R@5 | N@5 | R@10 | N@10 | coverage@10 | examples/s | best step |" in text
    assert "R@10\\|follows" in text and "R@10 q5" in text and "first_codes@10" in text
    assert "- buckets - base: R@5 " in text and "- base - item_transition: R@5 " in text
    assert (workdir / "ablation.csv").read_text().splitlines()[0].startswith(
        "system,num_seeds,recall@5_mean")
    assert json.loads((workdir / "ablation.json").read_text()) == exported(workdir)
    provenance = exported(workdir)["provenance"]
    assert {"commit", "config", "data_hashes", "packages", "sources"} <= set(provenance)
    assert provenance["sources"] == {
        row: os.path.realpath(workdir / ("base" if row in ROWS[2:] else row)) for row in ROWS}
    assert {c["sft"]["length_buckets"] == [3, 8] for c in provenance["config"].values()} == {
        True, False}


def test_a_rerun_skips_finished_variants(workdir, config):
    before = stamps(workdir)
    assert len(before) == 4
    runs = recipe_ablation.run_variants(config, str(workdir), parse_variants(VARIANTS))
    assert [r.variant.name for r in runs] == ["base", "buckets"]
    assert runs[1].results == results(workdir, "buckets")
    assert stamps(workdir) == before


def test_a_symlinked_finished_run_is_adopted_and_not_written(workdir, config, tmp_path):
    """An older run (no cost record) adopted as "base" by a symlink, "buckets" likewise."""
    earlier = tmp_path / "earlier_run"
    shutil.copytree(workdir / "base", earlier)
    path = earlier / "results.json"
    older = {k: v for k, v in json.loads(path.read_text()).items()
             if k not in ("sft/examples_per_s", "sft/train_seconds")}
    path.write_text(json.dumps(older))
    ablation = tmp_path / "adopting"
    ablation.mkdir()
    (ablation / "base").symlink_to(earlier)
    (ablation / "buckets").symlink_to(workdir / "buckets")
    before = {**stamps(ablation), **{p: p.stat().st_mtime_ns for p in earlier.rglob("*")}}

    runs = recipe_ablation.run_variants(config, str(ablation), parse_variants(VARIANTS))
    text = recipe_ablation.summarize(str(ablation), runs, num_resamples=RESAMPLES)
    assert {**stamps(ablation), **{p: p.stat().st_mtime_ns for p in earlier.rglob("*")}} == before
    data = json.loads((ablation / "ablation.json").read_text())
    assert data["systems"]["base"]["mean"]["examples_per_s"] is None
    assert data["systems"]["base"]["mean"]["recall@10"] == exported(workdir)["systems"]["base"][
        "mean"]["recall@10"]
    assert data["bootstrap"] == exported(workdir)["bootstrap"]
    assert data["provenance"]["sources"]["base"] == str(earlier.resolve())
    assert "| base | " in text and "n/a" in text


def test_mistakes_fail_before_any_run(workdir, config, tmp_path):
    # A finished directory of another config: the error names the variant and the field, and
    # the variant listed before it has not started.
    ablation = tmp_path / "mistaken"
    ablation.mkdir()
    (ablation / "buckets").symlink_to(workdir / "base")
    variants = parse_variants(("new:sft.num_steps=6", *VARIANTS[1:]))
    with pytest.raises(ValueError, match=r"variant 'buckets': .* \(fields sft.length_buckets "
                                         r"differ\)"):
        recipe_ablation.run_variants(config, str(ablation), variants)
    (ablation / "buckets").unlink()
    (ablation / "buckets").symlink_to(tmp_path / "gone")
    with pytest.raises(ValueError, match=r"variant 'buckets': .* is a symlink to .*gone, which "
                                         "does not exist"):
        recipe_ablation.run_variants(config, str(ablation), variants)
    (ablation / "buckets").unlink()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (ablation / "buckets").symlink_to(unfinished)
    with pytest.raises(ValueError, match=r"variant 'buckets': .* links to .*unfinished, which "
                                         "has no results.json"):
        recipe_ablation.run_variants(config, str(ablation), variants)
    assert list(unfinished.iterdir()) == []
    bad = parse_variants(("new:sft.num_steps=6", "typo:sft.lenght_buckets=(3,8)"))
    with pytest.raises(ValueError, match=r"variant 'typo', field 'sft.lenght_buckets': no such"):
        recipe_ablation.run_variants(config, str(ablation), bad)
    no_generator = parse_variants(("new:sft.num_steps=6", "floors:stages=('sids','popularity')"))
    with pytest.raises(ValueError, match=r"variant 'floors': config.stages .* has no 'sft' stage"):
        recipe_ablation.run_variants(config, str(ablation), no_generator)
    assert sorted(p.name for p in ablation.iterdir()) == ["buckets"]
    with pytest.raises(ValueError, match="--reference=nope is not a variant"):
        recipe_ablation.pick_reference(variants, "nope")


def test_cli_reruns_from_finished_directories_and_exports(workdir, config_file, tmp_path):
    cli_dir = tmp_path / "cli"  # the module's runs, adopted, so its own tables stay as written
    cli_dir.mkdir()
    for name in ("base", "buckets"):
        (cli_dir / name).symlink_to(workdir / name)
    before = stamps(cli_dir)
    assert len(before) == 4

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "experiments.sft_ablation", f"--config={config_file}",
             f"--workdir={cli_dir}", *args],
            cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
            text=True, timeout=120,
        )

    path = tmp_path / "results" / "ablation.json"
    rerun = run("--variant=base", "--variant=buckets:sft.length_buckets=(3,8)",
                "--reference=buckets", "--num_resamples=200", f"--export={path}",
                "--config.sft.max_steps_per_run=5")  # run control: still the same config
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert rerun.stderr.count("finished, skipping") == 2
    assert "| buckets |" in rerun.stdout and "- base - buckets: R@5 " in rerun.stdout
    assert stamps(cli_dir) == before
    assert (cli_dir / "ablation.md").read_text() in rerun.stdout
    data = json.loads(path.read_text())
    assert {(e["a"], e["b"]) for e in data["bootstrap"]} == {
        ("base", "buckets"), ("base", "item_transition"), ("buckets", "item_transition")}
    assert {e["resamples"] for e in data["bootstrap"]} == {200}

    wrong = run("--variant=base", "--variant=x:sft.num_steps=many")
    assert wrong.returncode == 1
    assert "error: variant 'x', field 'sft.num_steps': the field is int" in wrong.stderr


def _strip_follows_counts(run_dir):
    """Makes run_dir's results.json look like a run that predates the follows-count split."""
    path = run_dir / "results.json"
    original = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in original.items() if "follows_" not in k}))
    return original


def test_backfill_recomputes_exactly_what_the_stages_reported(workdir, tmp_path):
    from sgrec_jax.stages.backfill import BACKFILLED_KEY, backfill_diagnostics

    old = tmp_path / "old"
    shutil.copytree(workdir / "base", old)
    original = _strip_follows_counts(old)
    stripped = results(tmp_path, "old")
    filled = backfill_diagnostics(str(old), stripped)
    recomputed = {k for k in original if "follows_" in k}
    assert recomputed and {"diag/recall@10|follows_once",
                           "item_transition/diag/recall@10|follows_often"} <= recomputed
    for key in recomputed:
        assert filled[key] == pytest.approx(original[key], nan_ok=True), key
    for key, value in stripped.items():  # reported numbers are never replaced
        assert filled[key] == value
    assert set(filled[BACKFILLED_KEY]) == {"sft", "item_transition", "popularity"}
    assert "diag/recall@10|follows_once" in filled[BACKFILLED_KEY]["sft"]
    # A run that has them is returned as it is.
    assert backfill_diagnostics(str(workdir / "base"), results(workdir, "base")) == \
        results(workdir, "base")


def test_backfill_refuses_rankings_of_other_users(workdir, tmp_path):
    from sgrec_jax.stages.backfill import backfill_diagnostics
    from sgrec_jax.train.evaluate import Rankings

    old = tmp_path / "old"
    shutil.copytree(workdir / "base", old)
    _strip_follows_counts(old)
    path = old / "sft" / "test_rankings.npz"
    rankings = Rankings.load(path)
    Rankings(rankings.users_u[::-1].copy(), rankings.targets_u, rankings.items_uk,
             rankings.scores_uk).save(path)
    with pytest.raises(ValueError, match="not the test split"):
        backfill_diagnostics(str(old), results(tmp_path, "old"))
