"""The device check: one run that says whether this code works on an accelerator (a lent GPU, a
TPU VM) and how fast, written as one JSON file. `experiments/device_check.sh --platform=gpu`
runs it (through `python -m experiments.device_check`) with the sizes of
experiments/configs/device_check.py.

Parts (`parts`, run in order). Each is timed; one that raises is recorded under "errors" and the
others still run; the JSON is rewritten after every part, so a run cut short keeps what it had.
  device      platform, device kind and count, library versions, the device's memory limit.
  peak        the device's own matmul peak: the best of `peak_repeats` jitted n x n matmuls in
              bfloat16 (and float32); the bfloat16 figure is the denominator of every model FLOP
              utilisation (MFU) here.
  pallas      the Pallas advantage kernel compiled for the device (interpret mode only on CPU)
              against the jnp reference, per mix mode and channel count, on rewards with NaN
              channels, NaN entries and zero-std groups: max |difference| of the advantages and
              z-scores, flag agreement, and its time against XLA's.
  sft         the SFT train step per model (`sft_models`) and compute dtype (`sft_dtypes`):
              examples/s, FLOPs per example (XLA's cost analysis of the whole step), MFU, the
              last loss and the parameters' dtypes (float32 under bfloat16 too); per model, the
              bfloat16 loss relative to the float32 one after the same steps.
  beam        constrained beam search (beam `beam_size`, top `k`) over random catalogs of
              `beam_catalog_sizes` items: users/s, trie build time, device memory in use.
  rl          one RL step (rollout of G candidates, pi_old/pi_ref scoring, A2PO, one update):
              completions/s and MFU.
  quickstart  the quickstart experiment (SIDs + SFT on the synthetic world) with few steps, its
              results.json metrics compared with a CPU reference within per-metric tolerances
              (only when the reference's config agrees at `quickstart_config_keys`, what the
              quickstart's stages read; otherwise the comparison is skipped, and the JSON says
              why).
"checks" holds the pass/fail verdicts (kernel matches the reference; bfloat16 keeps float32
parameters and tracks the float32 loss; quickstart within tolerance) and "ok" is True only when
every check passed and no part raised.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import json
import os
import pathlib
import platform as platform_lib
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np

from sgrec_jax.benchmarks.base import (
    Sizes,
    beam_figures,
    generator,
    matmul_gflops,
    model_figures,
    synthetic_codes,
)
from sgrec_jax.benchmarks.rl import rl_figures
from sgrec_jax.benchmarks.run import resolve_sizes
from sgrec_jax.benchmarks.training import sft_figures
from sgrec_jax.core.files import read_json, write_json
from sgrec_jax.core.registry import Registry
from sgrec_jax.models.registry import parse_options
from sgrec_jax.rl.pallas_advantage import MIX_MODES, benchmark_advantages, default_interpret
from sgrec_jax.sid.catalog import build_catalog
from sgrec_jax.stages.pipeline import check_config as check_experiment
from sgrec_jax.stages.pipeline import run_pipeline

# The repository root: relative paths in the config (the quickstart reference) are read from it.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
# jax.default_backend() of each --platform.
BACKENDS = {"cpu": "cpu", "gpu": "gpu", "tpu": "tpu"}
VERSIONED_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "grain",
                      "ml_collections")
GIB = 2**30
# The largest relative gap between the bfloat16 and float32 SFT losses after the same steps
# from the same parameters on the same batch (bfloat16 keeps about 3 significant digits).
BF16_LOSS_GAP = 0.05


@dataclasses.dataclass
class DeviceCheck:
    """The run's config, the figures so far and where they are written."""

    config: Mapping[str, Any]
    out: pathlib.Path
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)

    def sizes(self, **overrides: Any) -> Sizes:
        """The benchmark Sizes of `config.base` with `overrides`, checked: unknown names, sizes
        and the generator options they give (e.g. heads that do not divide d_model) fail."""
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Sizes)})
        if unknown:
            raise ValueError(f"unknown benchmark sizes {unknown}; valid: "
                             f"{', '.join(f.name for f in dataclasses.fields(Sizes))}")
        sizes = resolve_sizes({**_plain(self.config["base"]), **overrides})
        parse_options("encoder_decoder", {
            name: getattr(sizes, name)
            for name in ("num_layers", "d_model", "num_heads", "head_dim", "d_ff", "dtype")})
        return sizes

    def bf16_peak_gflops(self) -> float:
        """The measured bfloat16 matmul peak (the peak part's, else measured now)."""
        if "peak" not in self.figures:
            self.figures["peak"] = peak_part(self)
        return self.figures["peak"]["bfloat16_tflops"] * 1e3

    def write(self) -> None:
        write_json(self.out, self.figures)


Part = Callable[[DeviceCheck], dict[str, Any]]
PARTS: Registry[Part] = Registry("device check part")


def _plain(value: Any) -> Any:
    """A ConfigDict (or mapping) as plain JSON-like data: dicts, lists, scalars."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return json.loads(json.dumps(value))


def names(value: Any) -> tuple[str, ...]:
    """A tuple of names that may come as comma-separated text (ml_collections reads
    `--config.parts=peak,sft` as the one string "peak,sft")."""
    value = (value,) if isinstance(value, str) else value
    return tuple(part.strip() for v in value for part in str(v).split(",") if part.strip())


def memory_figures() -> dict[str, float] | None:
    """GiB in use, peak in use (since the process started) and the limit on the first device, or
    None where the backend keeps no statistics (the CPU)."""
    stats = jax.devices()[0].memory_stats()
    if not stats:
        return None
    return {f"{name}_gib": stats[name] / GIB
            for name in ("bytes_in_use", "peak_bytes_in_use", "bytes_limit") if name in stats}


@PARTS.register("device")
def device_part(check: DeviceCheck) -> dict[str, Any]:
    expected = BACKENDS[check.config["platform"]]
    if jax.default_backend() != expected:
        raise RuntimeError(f"--platform={check.config['platform']} but JAX runs on "
                           f"{jax.default_backend()!r} ({jax.devices()})")
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "python": platform_lib.python_version(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "versions": versions,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "memory": memory_figures(),
    }


@PARTS.register("peak")
def peak_part(check: DeviceCheck) -> dict[str, Any]:
    n, repeats, seed = (check.config[k] for k in ("peak_matmul_size", "peak_repeats", "seed"))
    return {
        "matmul_size": n,
        "repeats": repeats,
        **{f"{dtype}_tflops": matmul_gflops(n, repeats, seed, dtype) / 1e3
           for dtype in ("bfloat16", "float32")},
    }


@PARTS.register("pallas")
def pallas_part(check: DeviceCheck) -> dict[str, Any]:
    cfg = check.config["pallas"]
    runs = []
    for channels in cfg["channels"]:
        for mode in MIX_MODES:
            if mode == "a2po" and channels < 2:
                continue
            run = benchmark_advantages(cfg["batch"], cfg["group"], channels, cfg["block_b"],
                                       mode=mode, repeats=cfg["repeats"], seed=check.config["seed"])
            run["xla_over_pallas"] = run["xla_s"] / run["pallas_s"]
            runs.append(run)
    worst = max(max(r["max_abs_diff_adv"], r["max_abs_diff_z"]) for r in runs)
    return {
        "interpret": default_interpret(),
        "tolerance": cfg["tolerance"],
        "max_abs_diff": worst,
        "matches_reference": bool(worst <= cfg["tolerance"]
                                  and all(r["flags_match"] and r["all_finite"] for r in runs)),
        "runs": runs,
    }


@PARTS.register("sft")
def sft_part(check: DeviceCheck) -> dict[str, Any]:
    peak = check.bf16_peak_gflops()
    runs, loss_gaps = [], {}
    for name, overrides in _plain(check.config["sft_models"]).items():
        losses = {}
        for dtype in names(check.config["sft_dtypes"]):
            sizes = check.sizes(**overrides, dtype=dtype)
            codes_nl, level_sizes = synthetic_codes(
                sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed)
            encoding = sizes.history_encodings[0]
            model = generator(sizes, codes_nl, level_sizes, encoding)
            run = {"model": name, **model_figures(model, encoding), **sft_figures(sizes, model)}
            del model
            run["mfu"] = run["gflops"] / peak
            runs.append(run)
            losses[dtype] = run["loss"]
            gc.collect()
        if {"float32", "bfloat16"} <= set(losses):
            loss_gaps[name] = abs(losses["bfloat16"] - losses["float32"]) / abs(losses["float32"])
    return {
        "mfu_definition": "FLOPs of the compiled step (XLA cost analysis: forward, backward, "
                          "optimizer) per second / the measured bfloat16 matmul peak",
        "bf16_peak_tflops": peak / 1e3,
        "runs": runs,
        "bf16_loss_relative_gap": loss_gaps,
        "params_float32": all(r["param_dtypes"] == ["float32"] for r in runs),
    }


@PARTS.register("beam")
def beam_part(check: DeviceCheck) -> dict[str, Any]:
    cfg = check.config["beam"]
    runs = []
    for num_items in cfg["catalog_sizes"]:
        sizes = check.sizes(**_plain(cfg["model"]), num_items=num_items, dtype=cfg["dtype"],
                            beam_sizes=(cfg["beam_size"],), decode_batch=cfg["decode_batch"])
        start = time.perf_counter()
        codes_nl, level_sizes = synthetic_codes(
            num_items, sizes.levels, sizes.codebook_size, sizes.seed)
        catalog = build_catalog(codes_nl, level_sizes)
        build_seconds = time.perf_counter() - start
        encoding = sizes.history_encodings[0]
        model = generator(sizes, codes_nl, level_sizes, encoding)
        run = {"num_items": num_items, "codes_and_trie_seconds": build_seconds,
               "trie_bytes_per_item": catalog.bytes_per_item(),
               **model_figures(model, encoding),
               **beam_figures(sizes, model, catalog, cfg["beam_size"],
                              np.random.default_rng(sizes.seed)),
               "memory_after": memory_figures()}
        runs.append(run)
        del model, catalog, codes_nl
        gc.collect()
    return {"runs": runs}


@PARTS.register("rl")
def rl_part(check: DeviceCheck) -> dict[str, Any]:
    cfg = check.config["rl"]
    sizes = check.sizes(**_plain(cfg["model"]), dtype=cfg["dtype"])
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed)
    catalog = jax.device_put(build_catalog(codes_nl, level_sizes))
    encoding = sizes.history_encodings[0]
    model = generator(sizes, codes_nl, level_sizes, encoding)
    run = {**model_figures(model, encoding), "rl_batch": sizes.rl_batch,
           "rl_group": sizes.rl_group, **rl_figures(sizes, model, catalog)}
    run["mfu"] = run["gflops"] / check.bf16_peak_gflops()
    return run


def compare_metrics(metrics: Mapping[str, float], reference: Mapping[str, float],
                    tolerances: Mapping[str, float]) -> dict[str, Any]:
    """Per metric: |value - reference| <= tolerance. Returns {"within_tolerance": bool,
    "metrics": {name: {value, reference, abs_diff, tolerance, ok}}}; a metric missing from
    either side fails."""
    rows = {}
    for name, tolerance in tolerances.items():
        value, ref = metrics.get(name), reference.get(name)
        ok = value is not None and ref is not None and abs(value - ref) <= tolerance
        rows[name] = {"value": value, "reference": ref, "tolerance": tolerance, "ok": bool(ok),
                      "abs_diff": None if value is None or ref is None else abs(value - ref)}
    return {"within_tolerance": all(r["ok"] for r in rows.values()), "metrics": rows}


def _differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """The paths at which two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b))
                for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


@PARTS.register("quickstart")
def quickstart_part(check: DeviceCheck) -> dict[str, Any]:
    cfg = check.config
    experiment = cfg["quickstart"]
    tolerances = _plain(cfg["quickstart_tolerances"])
    with tempfile.TemporaryDirectory(prefix="device_check_quickstart_") as workdir:
        start = time.perf_counter()
        results = run_pipeline(experiment, workdir)
        seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in results.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    figures: dict[str, Any] = {
        "seconds": seconds,
        "config": _plain(experiment),
        "metrics": metrics,
        "tolerances": tolerances,
    }
    path = pathlib.Path(cfg["quickstart_reference"])
    reference = read_json(path if path.is_absolute() else REPO_ROOT / path)
    if reference is None:
        figures["comparison"] = {"skipped": f"no reference file {path}"}
    elif differing := _differences(
            *({k: c.get(k) for k in names(cfg["quickstart_config_keys"])}
              for c in (figures["config"], reference["config"]))):
        figures["comparison"] = {
            "skipped": "the quickstart config differs from the reference's at "
                       + ", ".join(differing[:5]) + (" ..." if len(differing) > 5 else "")}
    else:
        figures["comparison"] = {
            "reference": {k: reference[k] for k in ("platform", "versions") if k in reference},
            **compare_metrics(metrics, reference["metrics"], tolerances)}
    return figures


def reference_of(figures: Mapping[str, Any]) -> dict[str, Any]:
    """The quickstart reference file's content from a finished check: its platform, versions,
    quickstart config and metrics (`quickstart_part` compares later runs with it)."""
    quickstart = figures["quickstart"]
    return {
        "platform": figures["device"]["backend"],
        "device_kind": figures["device"]["device_kind"],
        "versions": figures["device"]["versions"],
        "config": quickstart["config"],
        "metrics": {k: quickstart["metrics"][k] for k in quickstart["tolerances"]},
    }


def verdicts(figures: Mapping[str, Any]) -> dict[str, bool | None]:
    """Pass (True), fail (False) or not run / skipped (None) per check."""
    quickstart = figures.get("quickstart", {}).get("comparison", {})
    sft = figures.get("sft", {})
    gaps = sft.get("bf16_loss_relative_gap", {})
    return {
        "pallas_matches_reference": figures.get("pallas", {}).get("matches_reference"),
        "bf16_params_float32": sft.get("params_float32"),
        "bf16_loss_tracks_float32": (all(g <= BF16_LOSS_GAP for g in gaps.values())
                                     if gaps else None),
        "quickstart_within_tolerance": quickstart.get("within_tolerance"),
    }



def check_config(config: Mapping[str, Any]) -> list[str]:
    """Fails fast, before any JAX work (a lent device's minutes are few), on an unknown platform,
    part or dtype, benchmark sizes that do not resolve, or a bad quickstart config; returns the
    parts to run, in order."""
    parts = list(dict.fromkeys(names(config["parts"])))
    if not parts:
        raise ValueError(f"parts is empty; valid: {', '.join(PARTS.names())}")
    for name in parts:
        PARTS.get(name)
    if config["platform"] not in BACKENDS:
        raise ValueError(f"platform must be one of {', '.join(BACKENDS)}, got "
                         f"{config['platform']!r}")
    check = DeviceCheck(config, pathlib.Path())
    for dtype in names(config["sft_dtypes"]):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"sft_dtypes must be float32 and/or bfloat16, got {dtype!r}")
        for overrides in _plain(config["sft_models"]).values():
            check.sizes(**overrides, dtype=dtype)
    beam = config["beam"]
    for num_items in beam["catalog_sizes"]:
        check.sizes(**_plain(beam["model"]), num_items=num_items, dtype=beam["dtype"],
                    beam_sizes=(beam["beam_size"],), decode_batch=beam["decode_batch"])
    check.sizes(**_plain(config["rl"]["model"]), dtype=config["rl"]["dtype"])
    if "quickstart" in parts:
        check_experiment(config["quickstart"])
    return parts


def run_device_check(config: Mapping[str, Any], out: str | os.PathLike,
                     log: Callable[[str], None] = print) -> dict[str, Any]:
    """Runs config.parts in order (after `check_config`), writing the figures to `out` after
    each part; returns them."""
    parts = check_config(config)
    check = DeviceCheck(config, pathlib.Path(out))
    check.figures.update(platform=config["platform"], parts=parts, errors={}, part_seconds={},
                         argv=sys.argv)
    start = time.perf_counter()
    for name in parts:
        log(f"device check: {name} ...")
        part_start = time.perf_counter()
        try:
            check.figures[name] = PARTS.get(name)(check)
        except Exception as e:  # noqa: BLE001  (recorded; the other parts still run)
            check.figures["errors"][name] = "".join(
                traceback.format_exception_only(type(e), e)).strip()
            log(traceback.format_exc())
        check.figures["part_seconds"][name] = time.perf_counter() - part_start
        check.figures["total_seconds"] = time.perf_counter() - start
        check.figures["checks"] = verdicts(check.figures)
        check.figures["ok"] = not check.figures["errors"] and all(
            v is not False for v in check.figures["checks"].values())
        check.write()
        log(f"device check: {name} done in {check.figures['part_seconds'][name]:.1f} s")
    check.figures["memory_at_end"] = memory_figures()
    check.write()
    return check.figures


def summary(figures: Mapping[str, Any]) -> str:
    """A few lines for the console: the headline figures and the verdicts."""
    lines = [f"device: {figures.get('device', {}).get('device_kind')} "
             f"({figures['platform']}), {figures['total_seconds']:.0f} s"]
    if "peak" in figures:
        lines.append(f"bf16 matmul peak: {figures['peak']['bfloat16_tflops']:.2f} TFLOP/s")
    if "pallas" in figures:
        p = figures["pallas"]
        lines.append(f"pallas: max abs diff {p['max_abs_diff']:.2e}, interpret={p['interpret']}")
    for run in figures.get("sft", {}).get("runs", []):
        lines.append(f"sft {run['model']} {run['dtype']} batch {run['train_batch']}: "
                     f"{run['examples_per_s']:.0f} examples/s, MFU {run['mfu']:.3f}")
    for run in figures.get("beam", {}).get("runs", []):
        lines.append(f"beam {run['beam_size']} over {run['num_items']:,} items: "
                     f"{run['users_per_s']:.1f} users/s")
    if "rl" in figures:
        lines.append(f"rl: {figures['rl']['completions_per_s']:.0f} completions/s")
    if "quickstart" in figures:
        comparison = figures["quickstart"]["comparison"]
        verdict = comparison.get("within_tolerance", comparison.get("skipped"))
        lines.append(f"quickstart: {figures['quickstart']['seconds']:.0f} s; against the "
                     f"reference: {verdict}")
    lines += [f"check {k}: {v}" for k, v in figures["checks"].items()]
    lines += [f"error in {k}: {v}" for k, v in figures["errors"].items()]
    lines.append(f"ok: {figures['ok']}")
    return "\n".join(lines)
