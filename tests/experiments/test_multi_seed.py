"""The multi-seed runner on a tiny synthetic world: tables, paired bootstrap, resume, results
file, --merge and --compare."""

import csv
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from ml_collections import config_dict

from sgrec_jax.stages import multi_seed, seed_archive

ROOT = pathlib.Path(__file__).resolve().parents[2]
SEEDS = (0, 1)


# The tiny SFT config plus the counting floors and an equally tiny SASRec stage, as a config file
# for the CLI too. It may not import this module: the CLI would then define its flags twice.
CONFIG_SOURCE = """
from tests.stages.test_sft import tiny_config


def get_config():
    config = tiny_config()
    config.stages = ("sids", "popularity", "item_transition", "sft", "sasrec")
    config.sft.eval_every = 12  # one validation per system keeps the test fast
    config.sasrec.model.update(num_layers=1, d_model=16, d_ff=32)
    config.sasrec.train.update(batch_size=16, num_steps=12, warmup_steps=2, eval_every=12,
                               log_every=1, patience=0)
    return config
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.py"
    path.write_text(CONFIG_SOURCE)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, config_file):
    """Two seeds run and summarised once for the whole module."""
    spec = importlib.util.spec_from_file_location("tiny_config_file", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    directory = tmp_path_factory.mktemp("multi")
    results = multi_seed.run_seeds(module.get_config(), str(directory), SEEDS)
    multi_seed.summarize(str(directory), results, num_resamples=2000)
    return directory


# The systems the pipeline runs (the post-hoc ones need their own command, see the last test).
RUN_SYSTEMS = {name: prefix for name, prefix in multi_seed.SYSTEMS.items()
               if name not in multi_seed.POSTHOC_SYSTEMS}


def results(workdir, seed):
    return json.loads((workdir / f"seed_{seed}" / "results.json").read_text())


def test_each_seed_runs_every_system_with_its_own_seed(workdir):
    for seed in SEEDS:
        config = json.loads((workdir / f"seed_{seed}" / "config.json").read_text())
        assert config["seed"] == seed and config["data"]["bid_seed"] == 0
        for system in RUN_SYSTEMS:
            assert (workdir / f"seed_{seed}" / system / "test_rankings.npz").exists()
    # Different seeds train different models: their test rankings differ.
    a, b = (np.load(workdir / f"seed_{s}" / "sft" / "test_rankings.npz")["items_uk"]
            for s in SEEDS)
    assert not np.array_equal(a, b)


def test_table_has_mean_and_std_over_seeds_per_system(workdir):
    with open(workdir / "table.csv") as f:
        rows = {row["system"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"sft", "sasrec", "item_transition", "popularity"}
    for system, prefix in RUN_SYSTEMS.items():
        values = [results(workdir, s)[f"{prefix}ndcg@10"] for s in SEEDS]
        assert int(rows[system]["num_seeds"]) == 2
        assert float(rows[system]["ndcg@10_mean"]) == pytest.approx(np.mean(values))
        assert float(rows[system]["ndcg@10_std"]) == pytest.approx(np.std(values, ddof=1))
    markdown = (workdir / "table.md").read_text()
    assert markdown.startswith("| system | seeds | recall@5 |")
    assert "| sasrec | 2 |" in markdown and "±" in markdown
    # The counting floors do not depend on the seed.
    assert float(rows["item_transition"]["recall@10_std"]) == 0.0


def test_diagnostics_table_has_every_system(workdir):
    with open(workdir / "diagnostics.csv") as f:
        rows = {row["system"]: row for row in csv.DictReader(f)}
    assert set(rows) == set(RUN_SYSTEMS)
    for system, prefix in RUN_SYSTEMS.items():
        values = [results(workdir, s)[f"{prefix}diag/follows_share"] for s in SEEDS]
        assert float(rows[system]["diag/follows_share_mean"]) == pytest.approx(np.mean(values))
        assert rows[system]["diag/first_codes@10_mean"]  # the sids stage ran first
    header = (workdir / "diagnostics.md").read_text().splitlines()[0]
    assert "| diag/recall@10\\|follows |" in header  # the "|" of the name is escaped


def test_bootstrap_pairs_sft_with_each_baseline_user_by_user(workdir):
    comparisons = json.loads((workdir / "bootstrap.json").read_text())
    assert set(comparisons) == {"sasrec", "item_transition", "popularity"}
    for baseline, comparison in comparisons.items():
        assert (comparison["a"], comparison["b"]) == ("sft", baseline)
        r = comparison["results"]["seed_0"]["ndcg@10"]
        assert r["mean_b"] == pytest.approx(results(workdir, 0)[f"{baseline}/ndcg@10"])
    boot = comparisons["sasrec"]
    assert set(boot["results"]) == {"seed_0", "seed_1", "seed_mean"}
    for seed in SEEDS:
        for metric in multi_seed.BOOTSTRAP_METRICS:
            r = boot["results"][f"seed_{seed}"][metric]
            # Per-user values recomputed from the rankings reproduce the stages' own means.
            assert r["mean_a"] == pytest.approx(results(workdir, seed)[metric])
            assert r["mean_b"] == pytest.approx(results(workdir, seed)[f"sasrec/{metric}"])
            assert r["mean_diff"] == pytest.approx(r["mean_a"] - r["mean_b"])
            assert r["ci_low"] <= r["mean_diff"] <= r["ci_high"]
            assert r["num_users"] == 60 and r["num_resamples"] == 2000
    mean = boot["results"]["seed_mean"]["recall@10"]["mean_a"]
    assert mean == pytest.approx(np.mean([results(workdir, s)["recall@10"] for s in SEEDS]))
    markdown = (workdir / "bootstrap.md").read_text()
    assert "| seed_mean | ndcg@10 |" in markdown and "A = sft, B = sasrec" in markdown
    assert "## sft vs popularity" in markdown and "A = sft, B = popularity" in markdown


ROWS = {"sft", "sasrec", "item_transition", "popularity"}
ENTRY_KEYS = {"a", "b", "metric", "diff", "ci95", "resamples", "seeds"}


def check_results_file(path, workdir, num_resamples):
    """The documented keys of benchmarks.md's "Results files", and their values."""
    data = json.loads(path.read_text())
    assert set(data) == {"dataset", "split", "users", "items", "systems", "bootstrap",
                         "provenance"}
    assert (data["split"], data["users"], data["items"]) == ("test", 60, 150)
    assert set(data["systems"]) == ROWS
    for row, prefix in RUN_SYSTEMS.items():
        entry = data["systems"][row]
        assert set(entry) == {"seeds", "mean", "std", "per_seed"} and entry["seeds"] == [0, 1]
        values = [results(workdir, s)[f"{prefix}recall@10"] for s in SEEDS]
        assert entry["mean"]["recall@10"] == pytest.approx(np.mean(values))
        assert entry["std"]["recall@10"] == pytest.approx(np.std(values, ddof=1))
        assert [seed["recall@10"] for seed in entry["per_seed"]] == values
        assert "diag/follows_share" in entry["mean"] and "diag/history_share@10" in entry["std"]
        assert set(entry["mean"]) >= set(multi_seed.TABLE_METRICS)
    assert all(set(e) == ENTRY_KEYS for e in data["bootstrap"])
    pairs = {(e["a"], e["b"], e["metric"], e["seeds"]) for e in data["bootstrap"]}
    assert pairs == {("sft", b, m, seeds) for b in ("sasrec", "item_transition", "popularity")
                     for m in ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
                     for seeds in ("seed_0", "seed_1", "seed_mean")}
    for e in data["bootstrap"]:
        lo, hi = e["ci95"]
        assert lo <= e["diff"] <= hi and e["resamples"] == num_resamples
    provenance = data["provenance"]
    assert {"commit", "config", "data_hashes", "packages"} <= set(provenance)
    assert len(provenance["commit"]) >= 7 and provenance["packages"]["numpy"]
    assert provenance["data_hashes"] == {}  # the synthetic world reads no file
    for config in provenance["config"].values():  # one per source directory, its first seed
        assert config["seed"] == 0
        assert config["stages"] == ["sids", "popularity", "item_transition", "sft", "sasrec"]
    return data


def test_export_writes_the_results_file(workdir, tmp_path):
    path = tmp_path / "results" / "tiny.json"
    # The module's own resample count, so the files summarize rewrites in workdir stay the same.
    multi_seed.summarize(str(workdir), multi_seed.load_results(str(workdir), SEEDS),
                         num_resamples=2000, export=str(path))
    data = check_results_file(path, workdir, 2000)
    assert set(data["provenance"]["sources"].values()) == {str(workdir)}


def split_by_system(workdir, directory, keep):
    """A copy of workdir whose seeds report only the systems in `keep`."""
    shutil.copytree(workdir, directory)
    for seed in SEEDS:
        path = directory / f"seed_{seed}" / "results.json"
        result = json.loads(path.read_text())
        dropped = [p for name, p in RUN_SYSTEMS.items() if name not in keep]
        result = {k: v for k, v in result.items()
                  if not any(k.startswith(p + "recall@10") for p in dropped)}
        path.write_text(json.dumps(result))
    return directory


def test_merge_takes_each_system_from_the_directory_that_ran_it(workdir, tmp_path):
    generator = split_by_system(workdir, tmp_path / "gen", {"sft", "item_transition",
                                                            "popularity"})
    sasrec = split_by_system(workdir, tmp_path / "sasrec", {"sasrec", "popularity"})
    path = tmp_path / "merged.json"
    text = multi_seed.merge_dirs([str(generator), str(sasrec)], str(tmp_path / "out"),
                                 num_resamples=300, export=str(path))
    assert "| sasrec | 2 |" in text and "A = sft, B = sasrec" in text
    data = check_results_file(path, workdir, 300)
    assert data["provenance"]["sources"] == {
        "sft": str(generator), "sasrec": str(sasrec), "item_transition": str(generator),
        "popularity": str(generator),
    }
    assert set(data["provenance"]["config"]) == {str(generator), str(sasrec)}

    # The same system with other numbers in a later directory is an error.
    path = sasrec / "seed_1" / "results.json"
    result = json.loads(path.read_text())
    result["popularity/recall@10"] += 0.01
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"popularity ran in both .* \(seed 1, recall@10"):
        multi_seed.merge_dirs([str(generator), str(sasrec)], str(tmp_path / "out"))


def test_cli_rerun_skips_finished_seeds_and_refuses_another_config(workdir, config_file,
                                                                   tmp_path):
    stamps = {p: p.stat().st_mtime_ns for p in workdir.glob("seed_*/*/metrics.jsonl")}
    assert len(stamps) == 4

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "experiments.multi_seed", f"--config={config_file}",
             f"--workdir={workdir}", "--seeds=0,1", "--num_resamples=500", *args],
            cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True,
            text=True, timeout=120,
        )

    # Run control only: still the same config.
    rerun = run("--config.sft.max_steps_per_run=5", f"--export={tmp_path / 'table.json'}",
                f"--archive={tmp_path / 'archive'}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    check_results_file(tmp_path / "table.json", workdir, 500)
    assert f"archived seeds 0, 1 into {tmp_path / 'archive'}" in rerun.stdout
    assert multi_seed.finished_seeds(str(tmp_path / "archive")) == [0, 1]
    assert rerun.stderr.count("finished, skipping") == 2
    assert "| sft | 2 |" in rerun.stdout and "| seed_mean | recall@10 |" in rerun.stdout
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing was retrained

    changed = run("--config.sft.num_steps=13")
    assert changed.returncode == 1
    assert "another config (fields sft.num_steps differ)" in changed.stderr


def test_compare_pairs_two_directories_by_seed_and_user(workdir, tmp_path):
    """B is A with seed 1's generator made perfect for the first 30 users: B - A > 0 there."""
    dir_b = tmp_path / "b"
    shutil.copytree(workdir, dir_b)
    path = dir_b / "seed_1" / "sft" / "test_rankings.npz"
    rankings = dict(np.load(path))
    rankings["items_uk"][:30, 0] = rankings["targets_u"][:30]
    np.savez(path, **rankings)

    text = multi_seed.compare_dirs(str(dir_b), str(workdir), str(tmp_path / "out"),
                                   system="sft", num_resamples=2000)
    boot = json.loads((tmp_path / "out" / "compare.json").read_text())["results"]
    assert set(boot) == {"seed_0", "seed_1", "seed_mean"}
    same = boot["seed_0"]["ndcg@10"]
    assert same["mean_diff"] == 0.0 and same["p_value_two_sided"] == 1.0
    better = boot["seed_1"]["recall@10"]
    assert better["mean_diff"] > 0 and better["ci_low"] > 0 and better["p_value_one_sided"] < 0.01
    assert text == (tmp_path / "out" / "compare.md").read_text()
    assert "| A | 2 |" in text and "| B | 2 |" in text


def test_compare_pairs_a_system_of_one_directory_with_another_of_the_other(workdir, tmp_path):
    """sft of A vs sasrec of B (here the same directory): the table and bootstrap name both."""
    out = tmp_path / "cross"
    text = multi_seed.compare_dirs(str(workdir), str(workdir), str(out),
                                   system=("sft", "sasrec"), num_resamples=500)
    assert text.startswith("sft vs sasrec, ")
    boot = json.loads((out / "compare.json").read_text())["results"]["seed_0"]["recall@10"]
    assert boot["mean_a"] == pytest.approx(results(workdir, 0)["recall@10"])
    assert boot["mean_b"] == pytest.approx(results(workdir, 0)["sasrec/recall@10"])
    with pytest.raises(ValueError, match="system must be one of sft, fusion, sasrec, "
                                         "item_transition, popularity or a pair"):
        multi_seed.compare_dirs(str(workdir), str(workdir), str(out), system=("sft", "gru4rec"))


def test_archive_spread_over_sessions_merges_to_the_same_table(workdir, tmp_path):
    """Seeds archived one at a time (two sessions) give the table and bootstrap of the run."""
    archive = tmp_path / "archive"
    assert seed_archive.archive_seeds(str(workdir), str(archive), [1]) == [1]
    assert seed_archive.archive_seeds(str(workdir), str(archive)) == [0]
    assert seed_archive.archive_seeds(str(workdir), str(archive)) == []  # already there
    for seed in SEEDS:
        assert sorted(p.name for p in (archive / f"seed_{seed}").iterdir()) == sorted(
            ["config.json", "results.json", *RUN_SYSTEMS])
        for system in RUN_SYSTEMS:
            with np.load(archive / f"seed_{seed}" / system / "test_rankings.npz") as kept, \
                 np.load(workdir / f"seed_{seed}" / system / "test_rankings.npz") as full:
                assert set(kept) == {"users_u", "targets_u", "items_uk"}
                np.testing.assert_array_equal(kept["items_uk"], full["items_uk"][:, :10])
                np.testing.assert_array_equal(kept["users_u"], full["users_u"])
    merged = multi_seed.merge_dirs([str(archive)], str(tmp_path / "out"), num_resamples=300)
    direct = multi_seed.merge_dirs([str(workdir)], str(tmp_path / "direct"), num_resamples=300)
    assert merged == direct.replace(str(workdir), str(archive))


def test_archive_refuses_other_numbers_and_another_experiment(workdir, tmp_path):
    archive = tmp_path / "archive"
    seed_archive.archive_seeds(str(workdir), str(archive), [0])
    path = archive / "seed_0" / "results.json"
    result = json.loads(path.read_text())
    result["sasrec/ndcg@10"] += 0.01
    path.write_text(json.dumps(result))
    with pytest.raises(ValueError, match=r"sasrec ran in both .* \(seed 0, ndcg@10"):
        seed_archive.archive_seeds(str(workdir), str(archive), [0])

    other = tmp_path / "other"  # seed 1 of another learning rate is not a seed of the archive
    shutil.copytree(workdir / "seed_1", other / "seed_1")
    config_path = other / "seed_1" / "config.json"
    config = json.loads(config_path.read_text())
    config["sft"]["learning_rate"] *= 2
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"seed 1 of .* is not a seed of the experiment archived"
                                         r" in .*sft.learning_rate differ"):
        seed_archive.archive_seeds(str(other), str(archive), [1])
    assert multi_seed.finished_seeds(str(archive)) == [0]
    with pytest.raises(ValueError, match="seeds 2 have not finished"):
        seed_archive.archive_seeds(str(workdir), str(archive), [2])


def test_archive_accepts_seeds_from_before_and_after_an_option_was_added(workdir, tmp_path):
    """Seed 0 ran before an option existed (its config.json lacks it), seed 1 after: with the
    code's defaults both belong to one archive, whichever is archived first."""
    old = tmp_path / "old"
    shutil.copytree(workdir, old)
    path = old / "seed_0" / "config.json"
    config = json.loads(path.read_text())
    defaults = config_dict.ConfigDict(json.loads((workdir / "seed_0" / "config.json").read_text()))
    del config["sft"]["history_crop"]
    path.write_text(json.dumps(config))
    for first, second in ((0, 1), (1, 0)):
        archive = tmp_path / f"archive_{first}"
        seed_archive.archive_seeds(str(old), str(archive), [first], defaults=defaults)
        with pytest.raises(ValueError, match="sft.history_crop differ"):  # strict without defaults
            seed_archive.archive_seeds(str(old), str(archive), [second])
        assert seed_archive.archive_seeds(str(old), str(archive), [second],
                                          defaults=defaults) == [second]


def test_fusion_run_after_the_seeds_is_a_system_of_tables_and_compare(workdir, tmp_path):
    """experiments.fusion on each seed directory: its report joins as "fusion/...", the seeds'
    results.json stay as they were, and --compare pairs fusion with item_transition."""
    from experiments.fusion import run_fusion

    directory = tmp_path / "multi"
    shutil.copytree(workdir, directory)
    before = {seed: results(directory, seed) for seed in SEEDS}
    early = tmp_path / "early_archive"  # seed 0 archived before fusion ran on it
    seed_archive.archive_seeds(str(directory), str(early), [0])
    for seed in SEEDS:
        run_fusion(str(directory / f"seed_{seed}"), lams=(0.0, 1.0), num_counting=20)
    loaded = multi_seed.load_results(str(directory), SEEDS)
    for seed in SEEDS:
        assert results(directory, seed) == before[seed]
        posthoc = json.loads((directory / f"seed_{seed}" / "fusion" / "results.json").read_text())
        assert loaded[seed]["fusion/recall@10"] == posthoc["recall@10"]
        assert loaded[seed]["fusion/lam"] == posthoc["fusion/lam"]
        assert loaded[seed]["recall@10"] == before[seed]["recall@10"]
    assert "fusion" in multi_seed.systems_in(loaded)
    archive = tmp_path / "archive"
    seed_archive.archive_seeds(str(directory), str(archive))
    archived = multi_seed.load_results(str(archive), SEEDS)
    assert archived[1]["fusion/ndcg@10"] == loaded[1]["fusion/ndcg@10"]
    assert "fusion/ndcg@10" not in multi_seed.load_results(str(early), [0])[0]
    seed_archive.archive_seeds(str(directory), str(early), [0])  # adds the fusion to seed 0
    assert multi_seed.load_results(str(early), [0])[0]["fusion/ndcg@10"] == loaded[0][
        "fusion/ndcg@10"]
    multi_seed.compare_dirs(str(directory), str(directory), str(tmp_path / "out"),
                            system=("fusion", "item_transition"), num_resamples=200)
    boot = json.loads((tmp_path / "out" / "compare.json").read_text())["results"]["seed_0"]
    assert boot["recall@10"]["mean_a"] == pytest.approx(loaded[0]["fusion/recall@10"])
    assert boot["recall@10"]["mean_b"] == pytest.approx(loaded[0]["item_transition/recall@10"])
