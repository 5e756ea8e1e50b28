"""The benchmark (sgrec_jax/benchmarks/ through experiments/benchmark.py) runs every section end
to end on tiny shapes and reports every figure (no timing asserts: the machine is shared); its
config checks its fields before any work."""

import json
import pathlib
import subprocess
import sys

import pytest

from experiments.configs import benchmark
from sgrec_jax.benchmarks.run import SECTIONS, resolve_sizes

REPO = pathlib.Path(__file__).resolve().parents[2]
QUICK = f"--config={REPO}/experiments/configs/benchmark.py:quick"


def run(*flags):
    return subprocess.run(
        [sys.executable, "-m", "experiments.benchmark", *flags],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


def test_quick_run_prints_and_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    result = run(QUICK, f"--out={out}")
    assert result.returncode == 0, result.stderr
    for text in ("GFLOP/s", "examples/s", "completions/s", "fraction of matmul throughput",
                 "users/s", "B/item", "growth 300 -> 3,000 items", "XLA time / Pallas time",
                 "2 device(s)", "load average"):
        assert text in result.stdout, text
    figures = json.loads(out.read_text())
    assert figures["matmul"] > 0 and len(figures["load_average_end"]) == 3
    assert figures["provenance"]["git_commit"]

    (sft,) = figures["sft"]
    assert sft["history_encoding"] == "item" and sft["history_tokens"] == 5
    assert sft["examples_per_s"] > 0 and sft["flops_per_example"] > 0
    # Each fraction is relative to the matmul figure measured just before that part.
    assert sft["fraction_of_matmul"] == sft["gflops"] / sft["matmul_gflops"]

    buckets = figures["buckets"]
    assert buckets["padded_examples_per_s"] > 0 and buckets["bucketed_examples_per_s"] > 0
    assert buckets["speedup"] == (
        buckets["bucketed_examples_per_s"] / buckets["padded_examples_per_s"]
    )
    assert "bucketed / padded, same run" in result.stdout

    (rl,) = figures["rl"]
    assert rl["completions_per_s"] > 0 and rl["flops_per_completion"] > 0
    assert rl["fraction_of_matmul"] == rl["gflops"] / rl["matmul_gflops"]
    assert rl["completions_per_s"] == 8 * 4 / rl["seconds_per_step"]  # requests x G per step
    assert rl["requests_per_s"] == 8 / rl["seconds_per_step"]
    assert rl["rollout_seconds"] > 0 and rl["reward_seconds"] > 0 and rl["update_seconds"] >= 0
    assert "rollout time per step" in result.stdout

    (beam,) = figures["beam"][0]["beams"]
    assert beam["beam_size"] == 10 and beam["users_per_s"] > 0 and beam["flops_per_user"] > 0
    assert beam["fraction_of_matmul"] == beam["gflops"] / beam["matmul_gflops"]

    catalog = figures["catalog"]
    small, large = catalog["catalogs"]
    assert (small["num_items"], large["num_items"]) == (300, 3000)
    assert small["trie_bytes"] == small["trie_bytes_per_item"] * 300
    assert large["sid_table_bytes_per_item"] == 4 * 4  # 3 levels + dedup, int32
    assert catalog["growth"]["seconds_per_user"] == (
        large["seconds_per_user"] / small["seconds_per_user"]
    )

    pallas = figures["pallas"]
    assert pallas["interpret"] and pallas["pallas_s"] > 0 and pallas["xla_s"] > 0

    for step, traced in (("sft", 2), ("rl", 1)):  # quick: train_steps 2, rl_steps 1
        profile = figures["profile"][step]
        assert profile["steps"] == traced and profile["op_seconds_per_step"] > 0
        assert abs(sum(k["share"] for k in profile["by_kind"]) - 1) < 1e-6
        # The slowest ops are named from the compiled HLO: a shape and the JAX op they came from.
        assert any(o["shape"] and o["jax_op"] for o in profile["slowest_ops"])
    assert "SFT step profile" in result.stdout and "RL step profile" in result.stdout

    one, two = figures["scaling"]["runs"]
    assert (one["devices"], two["devices"]) == (1, 2) and one["relative_to_first"] == 1.0
    # FLOPs count the whole step on every device count (cost analysis is per device).
    assert 0.8 < two["flops_per_example"] / one["flops_per_example"] < 1.25


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--config.beam_sizes=5", "every beam size must be >= k=10"),
        ("--config.sections=sft,nope", "unknown sections ['nope']"),
        ("--config.scaling_devices=1,3",
         "scaling device count 3 must be >= 1 and divide train_batch=16"),
        ("--config.rl_rollout=greedy", "rl_rollout must be one of"),
        ("--config.d_fff=3", "--config.d_fff: the config has no field 'd_fff'; did you mean d_ff?"),
    ],
)
def test_bad_flags_are_usage_errors(flag, message):
    result = run(QUICK, flag)
    assert result.returncode != 0
    assert message in result.stderr
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1


def test_config_args_and_comma_separated_text():
    full, quick = benchmark.get_config(), benchmark.get_config("quick")
    assert full.sections == quick.sections == benchmark.ALL_SECTIONS
    assert set(SECTIONS.names()) == set(benchmark.ALL_SECTIONS)
    assert (full.num_items, quick.num_items) == (12_101, 300)
    sizes = resolve_sizes(quick)
    assert sizes.beam_sizes == (10,) and sizes.history_encodings == ("item",)
    # ml_collections reads --config.sections=sft,beam as the one string "sft,beam".
    quick.sections = ("sft,beam",)
    quick.history_encodings = ("item, code",)
    sizes = resolve_sizes(quick)
    assert sizes.sections == ("sft", "beam") and sizes.history_encodings == ("item", "code")
    with pytest.raises(ValueError, match="must be '' or 'quick'"):
        benchmark.get_config("slow")


def test_profile_summary_names_ops_from_the_hlo():
    from sgrec_jax.benchmarks.profile import hlo_op_info, op_kind, summarise

    hlo = (
        '  %copy_bitcast_fusion.6 = f32[1024,20480]{1,0} fusion(%a, %b), kind=kLoop, '
        'calls=%fc.1, metadata={op_name="jit(step)/transpose(jvp())/add_any"}\n'
        '  ROOT %ynn_fusion.2 = f32[20480,768]{1,0} fusion(%c), kind=kCustom, calls=%fc.2\n'
    )
    assert hlo_op_info(hlo) == {
        "copy_bitcast_fusion.6": ("f32[1024,20480]{1,0}", "jit(step)/transpose(jvp())/add_any"),
        "ynn_fusion.2": ("f32[20480,768]{1,0}", ""),
    }
    assert op_kind("copy_bitcast_fusion.6") == "copy_bitcast_fusion" and op_kind("dot") == "dot"
    summary = summarise({"copy_bitcast_fusion.6": 3.0, "ynn_fusion.2": 1.0, "ynn_fusion.3": 4.0},
                        hlo, steps=2)
    assert summary["op_seconds_per_step"] == 4.0
    assert summary["by_kind"] == [
        {"kind": "ynn_fusion", "seconds_per_step": 2.5, "share": 0.625},
        {"kind": "copy_bitcast_fusion", "seconds_per_step": 1.5, "share": 0.375},
    ]
    assert [o["op"] for o in summary["slowest_ops"]] == [
        "ynn_fusion.3", "copy_bitcast_fusion.6", "ynn_fusion.2"]
    named = summary["slowest_ops"][1]
    assert (named["seconds_per_step"], named["shape"], named["jax_op"]) == (
        1.5, "f32[1024,20480]{1,0}", "jit(step)/transpose(jvp())/add_any")
    assert summary["slowest_ops"][0]["shape"] == ""  # an op the HLO text does not list
