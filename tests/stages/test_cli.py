"""Command-line mistakes in every entry point: one `error:` line and exit 1, at flag parsing
(before any work), naming the flag and, for a config field, the closest valid names."""

import os
import pathlib
import subprocess
import sys

import pytest
from ml_collections import ConfigDict

from sgrec_jax.stages.cli import CommandLineError, _check_field

ROOT = pathlib.Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "experiments/configs/quickstart.py"
ENTRY_POINTS = ("train", "multi_seed", "sft_ablation", "ablation", "judge", "ctr_report",
                "psj_report", "reward_correlations")


def run(module: str, workdir: pathlib.Path, *args: str, config=QUICKSTART):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", f"--config={config}",
         f"--workdir={workdir}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def error_line(result: subprocess.CompletedProcess) -> str:
    """The only line of output, which must be an `error:` line, after exit status 1."""
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("module", ENTRY_POINTS)
def test_mistyped_field_is_one_error_line_in_every_entry_point(module, tmp_path):
    line = error_line(run(module, tmp_path / "w", "--config.sft.num_stepz=3"))
    assert line == ("error: --config.sft.num_stepz: sft has no field 'num_stepz'; "
                    "did you mean num_steps?")
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "args, config, expected",
    [
        (["--config.sftt.num_steps=3"], QUICKSTART,
         ["--config.sftt.num_steps: the config has no field 'sftt'; did you mean sft?"]),
        (["--config.sft.num_steps=abc"], QUICKSTART,
         ["--config.sft.num_steps=abc: ", "'abc'", "(the field is int, now "]),
        (["--workdri=x"], QUICKSTART, ["'workdri'", "workdir"]),
        ([], ROOT / "experiments/configs/nope.py", ["no config file", "nope.py"]),
        ([], f"{ROOT}/experiments/configs/synthetic_conflict.py:2",
         ["synthetic_conflict.py:2: ", "conflict must be in [0, 1]"]),
        (["extra"], QUICKSTART, ["unexpected arguments: ['extra']"]),
    ],
)
def test_bad_command_lines_are_one_error_line(tmp_path, args, config, expected):
    line = error_line(run("train", tmp_path / "w", *args, config=config))
    for part in expected:
        assert part in line
    assert not (tmp_path / "w").exists()


def test_field_check_names_the_closest_fields():
    config = ConfigDict({"seed": 0, "sft": {"num_steps": 1, "warmup_steps": 0, "lr": 0.1},
                         "sid": {"levels": 3}})
    _check_field(config, "sft.num_steps", "--config.sft.num_steps")  # valid: no error
    cases = {
        "sft.num_stepz": "--config.sft.num_stepz: sft has no field 'num_stepz'; did you mean "
                         "num_steps?",
        "sft.warm_steps": "did you mean warmup_steps or num_steps?",
        "sdi.levels": "the config has no field 'sdi'; did you mean sid?",
        "sft.batch": "sft has no field 'batch'; valid fields: lr, num_steps, warmup_steps",
        "seed.x": "seed is a field (int), not a section",
    }
    for field, message in cases.items():
        with pytest.raises(CommandLineError) as error:
            _check_field(config, field, f"--config.{field}")
        assert message in str(error.value)
