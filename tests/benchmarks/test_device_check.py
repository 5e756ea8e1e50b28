"""The device check (sgrec_jax/benchmarks/device_check.py through experiments/device_check.sh):
the CPU run end to end on tiny sizes, with an offline wheel install, and the JSON's keys and
sanity; its config checks before any work; the quickstart comparison and the verdicts."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

from experiments.configs import device_check as configs
from sgrec_jax.benchmarks.device_check import (
    PARTS,
    check_config,
    compare_metrics,
    reference_of,
    verdicts,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "device_check.sh"


def device_check(*args, env=None, timeout=600):
    return subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True,
        timeout=timeout,
        # No wheels unless a test gives some (a checkout's wheels/ may hold another Python's).
        env={**os.environ, "PYTHON": sys.executable, "SGREC_WHEELS": "/nonexistent",
             **(env or {})},
    )


def probe_wheel(folder: pathlib.Path) -> pathlib.Path:
    """A minimal pure-Python wheel, for the script's offline install."""
    folder.mkdir()
    path = folder / "sgrec_probe-1.0-py3-none-any.whl"
    info = "sgrec_probe-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("sgrec_probe/__init__.py", "")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: sgrec-probe\n"
                                         "Version: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                      "Root-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", f"sgrec_probe/__init__.py,,\n{info}/METADATA,,\n"
                                       f"{info}/WHEEL,,\n{info}/RECORD,,\n")
    return folder


@pytest.mark.slow
def test_quick_cpu_check_writes_every_part(tmp_path):
    out = tmp_path / "check.json"
    wheels = probe_wheel(tmp_path / "wheels")
    result = device_check("--platform=cpu", "--quick", f"--out={out}",
                          env={"SGREC_WHEELS": str(wheels), "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "installing 1 wheels" in result.stderr
    figures = json.loads(out.read_text())
    assert figures["ok"] and figures["errors"] == {}
    assert figures["platform"] == "cpu" and figures["parts"] == list(configs.PARTS)
    assert set(figures["part_seconds"]) == set(configs.PARTS)
    assert figures["total_seconds"] >= sum(figures["part_seconds"].values()) * 0.99
    assert figures["checks"] == {"pallas_matches_reference": True, "bf16_params_float32": True,
                                 "bf16_loss_tracks_float32": True,
                                 "quickstart_within_tolerance": None}
    assert "ok: True" in result.stdout

    device = figures["device"]
    assert device["backend"] == "cpu" and device["device_count"] >= 1
    assert device["versions"]["jax"] and device["memory"] is None  # no statistics on the CPU
    site = next(p for p in device["pythonpath"].split(":") if "sgrec_wheels." in p)
    assert not os.path.exists(site)  # the installed wheels are removed at the end

    assert figures["peak"]["bfloat16_tflops"] > 0 and figures["peak"]["float32_tflops"] > 0

    pallas = figures["pallas"]
    assert pallas["interpret"] and pallas["max_abs_diff"] <= pallas["tolerance"] == 1e-5
    assert [r["mode"] for r in pallas["runs"]] == ["rewards", "advantages", "a2po"]
    assert all(r["channels"] == 3 and r["flags_match"] and r["pallas_s"] > 0
               for r in pallas["runs"])

    sft = figures["sft"]
    assert [(r["model"], r["dtype"]) for r in sft["runs"]] == [
        ("tiger", "float32"), ("tiger", "bfloat16")]
    for run in sft["runs"]:
        assert run["examples_per_s"] > 0 and run["flops_per_example"] > 0
        assert run["mfu"] == pytest.approx(run["gflops"] / (sft["bf16_peak_tflops"] * 1e3))
        assert run["param_dtypes"] == ["float32"] and run["train_batch"] == 8
    assert 0 <= sft["bf16_loss_relative_gap"]["tiger"] < 0.05

    beam = figures["beam"]["runs"]
    assert [r["num_items"] for r in beam] == [300, 3000]
    assert all(r["users_per_s"] > 0 and r["beam_size"] == 10 and r["memory_after"] is None
               for r in beam)

    rl = figures["rl"]
    assert rl["completions_per_s"] == pytest.approx(4 * 4 / rl["seconds_per_step"])
    assert rl["mfu"] > 0

    quickstart = figures["quickstart"]
    assert set(quickstart["tolerances"]) <= set(quickstart["metrics"])
    assert quickstart["metrics"]["valid_rate"] == 1.0
    assert quickstart["comparison"]["skipped"].startswith(
        "the quickstart config differs from the reference's at ")
    reference = reference_of(figures)
    assert reference["platform"] == "cpu" and set(reference["metrics"]) == set(
        quickstart["tolerances"])


def test_script_arguments_and_shellcheck():
    for args, message in ((["--platform=fpga"], "--platform must be gpu, tpu or cpu"),
                          (["--platform=gpu", "--quick"], "--quick is for --platform=cpu")):
        result = device_check(*args, timeout=30)
        assert result.returncode == 2 and message in result.stderr
    # A bad part name fails before any JAX work, as one line.
    result = device_check("--platform=cpu", "--quick", "--config.parts=peak,nope", timeout=120)
    assert result.returncode == 1
    assert "error: unknown device check part 'nope'" in result.stderr
    checker = shutil.which("shellcheck") or pathlib.Path(sys.executable).with_name("shellcheck")
    if pathlib.Path(checker).exists():
        lint = subprocess.run([str(checker), "-x", str(SCRIPT)], capture_output=True, text=True,
                              cwd=REPO)
        assert lint.returncode == 0, lint.stdout


@pytest.mark.parametrize("arg", configs.PLATFORMS)
def test_every_config_resolves_before_any_work(arg):
    config = configs.get_config(arg)
    assert check_config(config) == list(configs.PARTS)
    assert config.platform == ("cpu" if arg == "quick" else arg)
    # The quickstart is the same on every platform but "quick": the reference applies to it.
    same = configs.quickstart_experiment().to_dict()
    assert (config.quickstart.to_dict() == same) == (arg != "quick")


def test_config_mistakes_fail_before_any_work():
    config = configs.get_config("cpu")
    config.sft_models.tiger.d_modle = 64
    with pytest.raises(ValueError, match=r"unknown benchmark sizes \['d_modle'\]"):
        check_config(config)
    config = configs.get_config("cpu")
    config.sft_models.wide.num_heads = 3
    config.sft_models.wide.head_dim = 0
    with pytest.raises(ValueError, match="divisible by num_heads"):
        check_config(config)
    config = configs.get_config("cpu")
    config.sft_dtypes = ("float32", "float16")
    with pytest.raises(ValueError, match="float32 and/or bfloat16"):
        check_config(config)
    config = configs.get_config("cpu")
    config.platform = "fpga"
    with pytest.raises(ValueError, match="platform must be one of"):
        check_config(config)
    with pytest.raises(ValueError, match="must be one of gpu, tpu, cpu, quick"):
        configs.get_config("npu")
    assert set(PARTS.names()) == set(configs.PARTS)


def test_compare_metrics_per_tolerance():
    tolerances = {"recall@10": 0.03, "valid_rate": 0.01, "sid/num_distinct_sids": 50.0}
    reference = {"recall@10": 0.081, "valid_rate": 1.0, "sid/num_distinct_sids": 1796.0}
    same = compare_metrics(reference, reference, tolerances)
    assert same["within_tolerance"] and all(r["abs_diff"] == 0 for r in same["metrics"].values())
    close = compare_metrics({"recall@10": 0.06, "valid_rate": 1.0,
                             "sid/num_distinct_sids": 1750.0}, reference, tolerances)
    assert close["within_tolerance"]
    broken = compare_metrics({"recall@10": 0.005, "valid_rate": 1.0,
                              "sid/num_distinct_sids": 1796.0}, reference, tolerances)
    assert not broken["within_tolerance"] and not broken["metrics"]["recall@10"]["ok"]
    assert broken["metrics"]["valid_rate"]["ok"]
    missing = compare_metrics({"recall@10": 0.081, "valid_rate": 1.0}, reference, tolerances)
    assert not missing["within_tolerance"]
    assert missing["metrics"]["sid/num_distinct_sids"]["abs_diff"] is None


def test_verdicts():
    assert verdicts({}) == dict.fromkeys(
        ("pallas_matches_reference", "bf16_params_float32", "bf16_loss_tracks_float32",
         "quickstart_within_tolerance"))
    figures = {"pallas": {"matches_reference": True},
               "sft": {"params_float32": True, "bf16_loss_relative_gap": {"a": 0.01, "b": 0.2}},
               "quickstart": {"comparison": {"within_tolerance": False}}}
    assert verdicts(figures) == {"pallas_matches_reference": True, "bf16_params_float32": True,
                                 "bf16_loss_tracks_float32": False,
                                 "quickstart_within_tolerance": False}
