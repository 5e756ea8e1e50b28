"""End to end: `python -m experiments.train` on the synthetic world, resume, and failure modes."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = "experiments/configs/quickstart.py"
# A small world so the test stays fast; the README command uses the config's defaults.
SMALL = ["--config.data.options.num_items=300", "--config.data.options.num_users=120",
         "--config.sid.codebook_size=8", "--config.model.options.num_layers=1",
         "--config.model.options.d_model=32", "--config.model.options.d_ff=64",
         "--config.sft.num_steps=8", "--config.sft.warmup_steps=2",
         "--config.sft.eval_every=4", "--config.sft.batch_size=32",
         "--config.eval.valid_users=20", "--config.eval.beam_size=10"]


def train(workdir, *args, config=QUICKSTART, cwd=ROOT):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.train", f"--config={ROOT / config}",
         f"--workdir={workdir}", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )


def test_quickstart_writes_results_and_resumes(tmp_path):
    # A relative --workdir, as in the README's command.
    run = train("run", *SMALL, cwd=tmp_path)
    tmp_path = tmp_path / "run"
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["dataset"]["items"] == 300
    assert results["valid_rate"] == 1.0
    assert results["sft/last_step"] == 8
    assert 0.0 <= results["sid/collision_rate"] <= 1.0
    assert results["sid/num_items"] == 300
    assert results["provenance"]["config"]["sid"]["codebook_size"] == 8
    assert len(results["provenance"]["git_commit"]) >= 7
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data"]["options"]["num_items"] == 300
    codes_mtime = (tmp_path / "sids.npz").stat().st_mtime_ns

    rerun = train(tmp_path, *SMALL)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "sids.npz").stat().st_mtime_ns == codes_mtime
    assert "reusing the SIDs" in rerun.stderr
    assert "resumed at step 8" in rerun.stderr


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.sid.levelz=4", "levelz"),  # the flag parser's own error
        ("--config.data.format=p6", "unknown dataset format 'p6'"),  # the pipeline's checks
    ],
)
def test_config_mistakes_fail_before_any_work(tmp_path, override, message):
    run = train(tmp_path / "w", override)
    assert run.returncode != 0
    assert message in run.stderr
    assert not (tmp_path / "w" / "sids.npz").exists()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("sid.quantizer", "rq_vq", "valid names: rq_kmeans, rq_vae"),
        ("sid.embeddings.source", "txt", "valid names: collaborative, npy"),
        ("stages", ("sids", "sfd"), "unknown pipeline stage 'sfd'"),
        ("sft.warmup_steps", 900, "sft: warmup_steps 900 must be in [0, num_steps 600)"),
    ],
)
def test_pipeline_checks_the_config_before_any_work(tmp_path, field, value, message):
    """The checks the command line runs (the CLI path itself is covered above), in-process."""
    from experiments.configs import quickstart
    from sgrec_jax.core.registry import UnknownNameError
    from sgrec_jax.stages.pipeline import run_pipeline

    config = quickstart.get_config()
    *parents, name = field.split(".")
    section = config
    for parent in parents:
        section = section[parent]
    section[name] = value
    with pytest.raises((ValueError, UnknownNameError), match=re.escape(message)):
        run_pipeline(config, str(tmp_path / "w"))
    assert not (tmp_path / "w" / "sids.npz").exists()


def test_malformed_data_file_is_one_line_error(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "sequential_data.txt").write_text("1 1 2 3\n2 4 x 6\n")
    (data / "datamaps.json").write_text(json.dumps(
        {"id2user": {"1": "u1", "2": "u2"}, "id2item": {str(i): f"i{i}" for i in range(1, 7)}}
    ))
    run = train(tmp_path / "w", f"--config.data.dir={data}",
                config="experiments/configs/beauty_sids.py")
    assert run.returncode == 1
    error_lines = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "sequential_data.txt:2" in error_lines[0]
    assert "Traceback" not in run.stderr
