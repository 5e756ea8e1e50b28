"""experiments/write_shards.py: a config's dataset to shards, once; a second write is refused."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def write(out, *flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.write_shards",
         "--config=experiments/configs/quickstart.py", f"--out={out}",
         "--config.data.options.num_users=30", "--config.data.options.num_items=100",
         "--config.data.max_history=5", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def test_writes_the_configured_dataset_once(tmp_path):
    result = write(tmp_path / "shards", "--examples_per_shard=40")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train:" in result.stdout and "written in" in result.stdout
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["max_history"] == 5 and manifest["dataset"]["num_users"] == 30
    assert len(manifest["splits"]["train"]["files"]) > 1
    # What a run over the shards alone checks its config against and reads.
    assert manifest["dataset"]["settings"]["options"]["num_users"] == 30
    assert manifest["dataset"]["catalog_version"] == 1 and manifest["dataset"]["stats"]
    assert {"items", "transitions"} <= set(manifest["side_tables"])

    again = write(tmp_path / "shards")
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "already holds shards" in again.stderr
