"""The benchmark runs end to end on tiny shapes and reports every figure (no timing asserts)."""

import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def run(*flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )


def test_quick_run_prints_and_writes_the_figures(tmp_path):
    out = tmp_path / "bench.json"
    result = run("--quick", f"--out={out}")
    assert result.returncode == 0, result.stderr
    for unit in ("GFLOP/s", "examples/s", "MFLOP", "fraction of matmul throughput", "users/s"):
        assert unit in result.stdout
    figures = json.loads(out.read_text())
    assert figures["matmul_gflops"] > 0
    (item,) = figures["encodings"]
    assert item["history_encoding"] == "item" and item["history_tokens"] == 5
    train = item["train"]
    assert train["examples_per_s"] > 0 and train["flops_per_example"] > 0
    # Each fraction is relative to the matmul figure measured just before that section.
    assert train["fraction_of_matmul"] == train["gflops"] / train["matmul_gflops"]
    (beam,) = item["beam_search"]
    assert beam["beam_size"] == 10 and beam["users_per_s"] > 0 and beam["flops_per_user"] > 0
    assert beam["fraction_of_matmul"] == beam["gflops"] / beam["matmul_gflops"]


def test_beam_narrower_than_k_is_a_usage_error():
    result = run("--quick", "--beam_sizes=5")
    assert result.returncode != 0
    assert "every beam size must be >= k=10" in result.stderr
