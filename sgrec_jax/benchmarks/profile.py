"""Benchmark section `profile`: where the SFT and RL train steps spend their time, op by op.

Traces `train_steps` calls of the compiled SFT step and `rl_steps` of the RL step (the `sft`
and `rl` sections' steps, first history encoding of the config) with `jax.profiler`, reads the
trace's per-op events back, and names each op with what XLA's compiled HLO says of it: its
output shape and the JAX operation it came from (`op_name` metadata, e.g.
`transpose(jvp())/dot_general` for a weight gradient). Figures: time per step by op kind (the
HLO name without its number: `ynn_fusion`/`dot` are matmuls, `*transpose*`/`copy*` layout
changes, the rest elementwise or reductions) and the slowest ops.

Times are the executor's per-op spans summed over the traced steps, divided by the step count.
On a multi-threaded backend ops overlap, so the spans can add up to more than the wall time;
their shares are what to read. This is the measurement behind docs/benchmarks.md "SFT step
profile": it found the N-d projections' weight gradients spending a fifth of the step in
strided transposes (fixed by `models.layers.Linear`).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import tempfile
from collections.abc import Callable
from typing import Any

import jax
from etils import epath

from sgrec_jax.benchmarks.base import Row, Sizes, generator, model_figures, synthetic_codes
from sgrec_jax.benchmarks.rl import compiled_rl_step
from sgrec_jax.benchmarks.training import compiled_sft_step
from sgrec_jax.sid.catalog import build_catalog

# Trace events that are not one HLO op: the executor, Python frames ("$..."), the jit call.
_NOT_OPS = re.compile(r"^(\$|Thunk|ThunkExecutor|PjitFunction|CommonPjRt|ParseArguments)")
_TOP_OPS = 12


def op_kind(name: str) -> str:
    """The HLO op name without its instance number ("copy_bitcast_fusion.6" -> its kind)."""
    return re.sub(r"[._]\d+$", "", name)


def hlo_op_info(hlo_text: str) -> dict[str, tuple[str, str]]:
    """{instruction name: (output shape, JAX op_name)} of every instruction in compiled HLO."""
    info = {}
    for match in re.finditer(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\S+) (.*)$", hlo_text,
                             flags=re.MULTILINE):
        op_name = re.search(r'op_name="([^"]*)"', match.group(3))
        info.setdefault(match.group(1), (match.group(2), op_name.group(1) if op_name else ""))
    return info


def op_seconds(trace_dir: epath.Path) -> dict[str, float]:
    """{op name: summed seconds} of the HLO op events in the trace `jax.profiler` wrote."""
    files = sorted(trace_dir.glob("plugins/profile/*/*.trace.json.gz"))
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir}/plugins/profile")
    with gzip.open(files[-1], "rt") as f:
        events = json.load(f)["traceEvents"]
    seconds: dict[str, float] = collections.Counter()
    for event in events:
        if event.get("ph") == "X" and not _NOT_OPS.match(event["name"]):
            seconds[event["name"]] += event["dur"] / 1e6  # microseconds
    return dict(seconds)


def summarise(seconds: dict[str, float], hlo_text: str, steps: int) -> dict[str, Any]:
    """Per-step seconds by op kind and the slowest ops, named by shape and JAX op."""
    info = hlo_op_info(hlo_text)
    total = sum(seconds.values())
    kinds: dict[str, float] = collections.Counter()
    for name, s in seconds.items():
        kinds[op_kind(name)] += s
    slowest = sorted(seconds.items(), key=lambda kv: -kv[1])[:_TOP_OPS]
    return {
        "steps": steps,
        "op_seconds_per_step": total / steps,
        "by_kind": [{"kind": k, "seconds_per_step": s / steps, "share": s / total}
                    for k, s in sorted(kinds.items(), key=lambda kv: -kv[1])],
        "slowest_ops": [{"op": name, "seconds_per_step": s / steps, "share": s / total,
                         "shape": info.get(name, ("", ""))[0],
                         "jax_op": info.get(name, ("", ""))[1]} for name, s in slowest],
    }


def traced_op_seconds(step: Callable[[Any], Any], state: Any, steps: int) -> dict[str, float]:
    """{op name: summed seconds} over `steps` traced calls state = step(state) (after one
    untraced warm-up call)."""
    state = step(state)
    jax.block_until_ready(state)
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            for _ in range(steps):
                state = step(state)
            jax.block_until_ready(state)
        return op_seconds(epath.Path(tmp))


def profile_section(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    """Profiles of the SFT step (train_steps traced calls) and the RL step (rl_steps), first
    history encoding of the config."""
    encoding = sizes.history_encodings[0]
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    model = generator(sizes, codes_nl, level_sizes, encoding)
    compiled, state, batch, _ = compiled_sft_step(sizes, model)
    sft = model_figures(model, encoding) | summarise(
        traced_op_seconds(lambda st: compiled(st, batch)[0], state, sizes.train_steps),
        compiled.as_text(), sizes.train_steps)
    catalog = jax.device_put(build_catalog(codes_nl, level_sizes))
    rl_step = compiled_rl_step(sizes, generator(sizes, codes_nl, level_sizes, encoding), catalog)
    rl = model_figures(model, encoding) | summarise(
        traced_op_seconds(lambda st: rl_step.compiled(st, *rl_step.args)[0], rl_step.state,
                          sizes.rl_steps),
        rl_step.compiled.as_text(), sizes.rl_steps)
    rows: list[Row] = []
    for name, figures, unit in (
        ("SFT", sft, f"batch {sizes.train_batch}"),
        ("RL", rl, f"{sizes.rl_batch} requests x G={sizes.rl_group}, {sizes.rl_rollout} rollout"),
    ):
        rows.append((f"{name} step profile, {encoding} history, {unit}: op time per step "
                     f"(summed spans, {figures['steps']} traced steps)",
                     f"{figures['op_seconds_per_step']:.3f}", "s"))
        rows += [(f"  {k['kind']}", f"{k['share']:.1%}", f"{k['seconds_per_step'] * 1e3:.1f} ms")
                 for k in figures["by_kind"][:8]]
        rows += [(f"  slowest: {o['op']} {o['shape']} {o['jax_op'][-50:]}", f"{o['share']:.1%}",
                  f"{o['seconds_per_step'] * 1e3:.1f} ms") for o in figures["slowest_ops"][:6]]
    return {"sft": sft, "rl": rl}, rows
