"""Benchmark sections of the machine and of supervised training: `matmul` (float32 matmul
throughput), `sft` (the jitted SFT train step), `buckets` (the real input pipeline with and
without length buckets) and `scaling` (the sft section on 1..N host-platform devices, each in a
fresh process)."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Any

import jax
import numpy as np

from sgrec_jax.benchmarks.base import (
    Row,
    Sizes,
    flops,
    generator,
    histories,
    model_figures,
    synthetic_codes,
)
from sgrec_jax.core.distributed import xla_flags_with_host_devices
from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.pipeline import bucket_widths, train_iterator
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.stages.sft import sft_loss
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_train_step

# The package's parent directory: a child process imports this same sgrec_jax.
_PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[2]


def matmul_section(sizes: Sizes) -> tuple[float, list[Row]]:
    gflops = sizes.matmul()
    name = f"matmul {sizes.matmul_size}x{sizes.matmul_size} float32, best of {sizes.matmul_repeats}"
    return gflops, [(name, f"{gflops:.1f}", "GFLOP/s")]


def sft_section(sizes: Sizes) -> tuple[list[dict[str, Any]], list[Row]]:
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    results, rows = [], []
    for encoding in sizes.history_encodings:
        model = generator(sizes, codes_nl, level_sizes, encoding)
        result = model_figures(model, encoding) | sft_figures(sizes, model)
        results.append(result)
        rows += [
            (f"SFT train step, {encoding} history ({result['history_tokens']} tokens), "
             f"{result['parameters'] / 1e6:.2f}M params, batch {sizes.train_batch}, "
             f"{jax.device_count()} device(s)", f"{result['examples_per_s']:.1f}", "examples/s"),
            ("  FLOPs per example (XLA cost analysis)",
             f"{result['flops_per_example'] / 1e6:.1f}", "MFLOP"),
            ("  achieved", f"{result['gflops']:.1f}", "GFLOP/s"),
            (f"  fraction of matmul throughput ({result['matmul_gflops']:.1f} GFLOP/s just "
             "before)", f"{result['fraction_of_matmul']:.2f}", ""),
        ]
    return results, rows


def compiled_sft_step(sizes: Sizes, model: SidGenerator) -> tuple[Any, Any, Any, float]:
    """(compiled SFT train step, its state, one batch, compile seconds) on a mesh over all
    devices: the step `sft_figures` times and the profile section traces."""
    rng = np.random.default_rng(sizes.seed)
    mesh = make_mesh()
    optimizer = make_optimizer(1e-3, warmup_steps=10, total_steps=1000, weight_decay=0.01)
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(sizes.seed), mesh
    )
    train_step = make_train_step(graphdef, sft_loss, optimizer, mesh, state_sharding)
    history_bh = histories(sizes.history, sizes.num_items, sizes.train_batch, rng)
    batch = host_to_global({
        "history": history_bh,
        "history_mask": history_bh != PAD_ITEM,
        "target": rng.integers(0, sizes.num_items, sizes.train_batch).astype(np.int32),
    }, mesh)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    return compiled, state, batch, time.perf_counter() - start


def sft_figures(sizes: Sizes, model: SidGenerator) -> dict[str, Any]:
    """Throughput of the jitted SFT train step on a mesh over all devices."""
    compiled, state, batch, compile_seconds = compiled_sft_step(sizes, model)
    # Cost analysis counts the per-device program; every device runs one.
    step_flops = flops(compiled) * jax.device_count()
    state, metrics = compiled(state, batch)  # warm-up: first-call dispatch and allocations
    jax.block_until_ready(metrics)
    matmul = sizes.matmul()
    start = time.perf_counter()
    for _ in range(sizes.train_steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    gflops = sizes.train_steps * step_flops / seconds / 1e9
    return {
        "devices": jax.device_count(),
        "train_batch": sizes.train_batch,
        # The last step's loss (the same batch every step) and the parameters' dtypes after it.
        "loss": float(metrics["loss"]),
        "param_dtypes": sorted({x.dtype.name for x in jax.tree.leaves(state.params)}),
        "examples_per_s": sizes.train_steps * sizes.train_batch / seconds,
        "flops_per_example": step_flops / sizes.train_batch,
        "gflops": gflops,
        "matmul_gflops": matmul,
        "fraction_of_matmul": gflops / matmul,
        "compile_seconds": compile_seconds,
    }


def buckets_section(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    model = generator(sizes, codes_nl, level_sizes, sizes.history_encodings[0])
    rng = np.random.default_rng(sizes.seed)
    rows = 8 * sizes.train_batch * max(len(sizes.length_buckets) + 1, sizes.train_steps)
    lengths = np.minimum(rng.geometric(1.0 / sizes.mean_history, rows), sizes.history)
    history = rng.integers(0, sizes.num_items, (rows, sizes.history)).astype(np.int32)
    history[np.arange(sizes.history)[None] < (sizes.history - lengths)[:, None]] = PAD_ITEM
    examples = Examples(history, rng.integers(0, sizes.num_items, rows).astype(np.int32),
                        np.arange(rows, dtype=np.int32))
    mesh = make_mesh()
    optimizer = make_optimizer(1e-3, warmup_steps=10, total_steps=1000, weight_decay=0.01)
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(sizes.seed), mesh
    )
    train_step = make_train_step(graphdef, sft_loss, optimizer, mesh, state_sharding)
    figures = {"mean_history": float(lengths.mean()), "padding_share": float(
        1 - lengths.mean() / sizes.history), "length_buckets": list(sizes.length_buckets)}
    out_rows = []
    for name, buckets in (("padded", ()), ("bucketed", sizes.length_buckets)):
        data = train_iterator(examples, batch_size=sizes.train_batch, seed=sizes.seed,
                              length_buckets=buckets, shard_index=0, shard_count=1)
        widths = {sizes.history} if not buckets else set(
            bucket_widths(buckets, sizes.history))
        seen: set[int] = set()
        while seen != widths:  # compile every width before timing
            batch = next(data)
            seen.add(batch["history"].shape[1])
            state, metrics = train_step(state, host_to_global(batch, mesh))
        jax.block_until_ready(metrics)
        start = time.perf_counter()
        for _ in range(sizes.train_steps):
            state, metrics = train_step(state, host_to_global(next(data), mesh))
        jax.block_until_ready(metrics)
        figures[f"{name}_examples_per_s"] = (
            sizes.train_steps * sizes.train_batch / (time.perf_counter() - start))
        out_rows.append((f"SFT loop, {name} batches (widths {sorted(widths)}), mean history "
                         f"{figures['mean_history']:.1f} of {sizes.history}",
                         f"{figures[f'{name}_examples_per_s']:.1f}", "examples/s"))
    figures["speedup"] = figures["bucketed_examples_per_s"] / figures["padded_examples_per_s"]
    out_rows.append(("  bucketed / padded, same run", f"{figures['speedup']:.2f}", "x"))
    return figures, out_rows


def scaling_section(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    encoding = sizes.history_encodings[0]
    results = [sft_in_subprocess(sizes, encoding, n) for n in sizes.scaling_devices]
    base = results[0]["examples_per_s"]
    rows = []
    for result in results:
        result["relative_to_first"] = result["examples_per_s"] / base
        rows.append((
            f"SFT train step, {encoding} history, batch {sizes.train_batch}, "
            f"{result['devices']} device(s) (fraction of matmul "
            f"{result['fraction_of_matmul']:.2f}; x{result['relative_to_first']:.2f} of "
            f"{results[0]['devices']})", f"{result['examples_per_s']:.1f}", "examples/s",
        ))
    figures = {
        "history_encoding": encoding,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "runs": results,
    }
    if jax.default_backend() == "cpu":
        rows.append((f"  (fake CPU devices sharing {os.cpu_count()} cores: the cost of the "
                     "data-parallel program, not a speed-up)", "", ""))
    return figures, rows


def sft_in_subprocess(sizes: Sizes, encoding: str, devices: int) -> dict[str, Any]:
    """The sft section's figures from a fresh process with `devices` host-platform devices."""
    child = dataclasses.replace(sizes, sections=("sft",), history_encodings=(encoding,))
    env = {
        **os.environ,
        "XLA_FLAGS": xla_flags_with_host_devices(devices),
        "PYTHONPATH": os.pathsep.join(
            filter(None, (str(_PACKAGE_ROOT), os.environ.get("PYTHONPATH")))
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sft.json")
        result = subprocess.run(
            [sys.executable, "-c", "import sys, sgrec_jax.registration; from "
             "sgrec_jax.benchmarks.training import sft_child; sft_child(*sys.argv[1:])",
             json.dumps(dataclasses.asdict(child)), out],
            env=env, capture_output=True, text=True,
        )
        if result.returncode:
            raise RuntimeError(f"the {devices}-device run failed:\n{result.stderr[-4000:]}")
        with open(out) as f:
            (figures,) = json.load(f)["sft"]
    return figures


def sft_child(sizes_json: str, out: str) -> None:
    """The child process of `sft_in_subprocess` (which imports sgrec_jax.registration first):
    the sft section of `sizes_json` (a Sizes as JSON), its figures written to `out` as
    {"sft": figures}."""
    fields = json.loads(sizes_json)
    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    figures, _ = sft_section(sizes)
    with open(out, "w") as f:
        json.dump({"sft": figures}, f)
