"""Speed figures of this machine and of the generator, measured in one run (not a test).

    python -m experiments.benchmark [--sections=matmul,sft,beam,...] [--quick] [--out=bench.json]

Sections (`--sections`, run in the order given; default all):
  matmul   the machine's float32 matmul throughput: jitted n x n matmuls, best of several;
  sft      SFT train-step throughput (examples/s) of the encoder-decoder with the real jitted step
           (`create_train_state`, `make_train_step`, `sft_loss`), its FLOPs per example as XLA's
           cost analysis of the compiled step counts them (forward + backward + optimizer), and
           the achieved FLOP rate as a fraction of the matmul throughput; per history encoding
           ("item": one token per history item, "code": one per code);
  rl       one jitted RL step (`rl.grpo.make_rl_step`: rollout of G candidates per request,
           pi_old and pi_ref scoring, rewards, A2PO advantages, one clipped policy update) in
           completions/s (requests x G per second), requests/s, and as a fraction of the matmul
           throughput; channels "rank" (business) and the cosine of random unit item embeddings
           (semantic); split into rollout, reward (+ advantages) and update time, the first two
           jitted and timed alone, the update the rest of the step;
  beam     constrained beam-search throughput (users/s, top-k of the whole catalog) of the jitted
           decode that `serving.Recommender` runs, per encoding and beam width;
  catalog  the same beam search (first encoding, widest beam) over synthetic catalogs of
           `--catalog_sizes` items (random codes + dedup level): users/s, trie build time, trie
           and SID-table bytes per item, and their growth from the smallest to the largest;
  pallas   the Pallas advantage kernel versus the same math in plain XLA
           (`rl.pallas_advantage.benchmark_advantages`); on CPU Pallas runs in interpret mode;
  buckets  SFT examples/s of the real loop's input (`data.pipeline.train_iterator`) with and
           without `--length_buckets`, over histories whose lengths are geometric with mean
           `--mean_history` (Beauty's training histories: mean 6.7 items, median 4, of 20 slots)
           capped at `--history`: padded full-width batches vs batches cut to their bucket's
           width (every width compiled before timing);
  scaling  SFT examples/s on 1, 2, 4, 8 devices: this script's sft section in a subprocess per
           count with XLA_FLAGS=--xla_force_host_platform_device_count=N (on a CPU host these are
           fake devices sharing its cores, so this measures the cost of the data-parallel
           program, collectives included, not a speed-up).
The catalog of the sft/beam sections has `--num_items` items with random codes on `--levels`
levels of `--codebook_size`, plus the dedup level. The matmul throughput is measured again just
before each timed part and each fraction uses that figure, so on a shared machine the fractions
stay meaningful when the absolute rates do not. The load average at the start and end is
recorded too. `--quick` switches to tiny default sizes (flags given explicitly still win).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import write_json
from sgrec_jax.core.registry import Registry
from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.pipeline import bucket_widths, train_iterator
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.models.registry import build_model
from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardChannel, RewardRequests
from sgrec_jax.rewards.channel import nan_where_padding, reward_tensor, safe_items
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
from sgrec_jax.rl.grpo import RLSettings, init_extra, make_rl_step
from sgrec_jax.rl.pallas_advantage import benchmark_advantages
from sgrec_jax.rl.rollout import ROLLOUT_MODES, generate
from sgrec_jax.serving.recommender import decode_fn, pack_histories
from sgrec_jax.sid.catalog import Catalog, build_catalog
from sgrec_jax.sid.dedup import append_dedup_level
from sgrec_jax.stages.sft import sft_loss
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_train_step

ALL_SECTIONS = ("matmul", "sft", "buckets", "rl", "beam", "catalog", "pallas", "scaling")

_SECTIONS = flags.DEFINE_list("sections", list(ALL_SECTIONS), "Sections to run, in this order.")
_QUICK = flags.DEFINE_bool("quick", False, "Tiny default sizes (seconds; used by the test).")
_OUT = flags.DEFINE_string("out", None, "Also write the figures to this JSON file.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the synthetic catalogs, models and requests.")
_MATMUL_SIZE = flags.DEFINE_integer("matmul_size", 2048, "n of the n x n float32 matmuls.")
_MATMUL_REPEATS = flags.DEFINE_integer("matmul_repeats", 10, "Matmuls timed; the best counts.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 12_101, "Catalog size (Beauty: 12,101).")
_CODEBOOK_SIZE = flags.DEFINE_integer("codebook_size", 256, "Codes per SID level.")
_LEVELS = flags.DEFINE_integer("levels", 3, "SID levels before the dedup level.")
_NUM_LAYERS = flags.DEFINE_integer("num_layers", 4, "Blocks per stack (encoder and decoder).")
_D_MODEL = flags.DEFINE_integer("d_model", 128, "Model width.")
_NUM_HEADS = flags.DEFINE_integer("num_heads", 4, "Attention heads.")
_D_FF = flags.DEFINE_integer("d_ff", 512, "MLP width.")
_HISTORY = flags.DEFINE_integer("history", 20, "Items per history (max_history).")
_ENCODINGS = flags.DEFINE_list("history_encodings", ["item", "code"], "Encodings to measure.")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 256, "SFT batch size.")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 10, "Timed train steps (after a warm-up).")
_LENGTH_BUCKETS = flags.DEFINE_list("length_buckets", ["5", "10"], "Bucket widths (buckets).")
_MEAN_HISTORY = flags.DEFINE_float("mean_history", 6.7, "Mean history length (buckets).")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 128, "Requests per beam-search call.")
_BEAM_SIZES = flags.DEFINE_list("beam_sizes", ["20", "50"], "Beam widths to measure.")
_K = flags.DEFINE_integer("k", 10, "Items returned per request (<= every beam width).")
_DECODE_REPEATS = flags.DEFINE_integer("decode_repeats", 5, "Timed calls; the best counts.")
_RL_BATCH = flags.DEFINE_integer("rl_batch", 64, "Requests per RL step.")
_RL_GROUP = flags.DEFINE_integer("rl_group", 16, "Candidates G per request.")
_RL_ROLLOUT = flags.DEFINE_enum("rl_rollout", "beam", ROLLOUT_MODES, "How candidates are drawn.")
_RL_STEPS = flags.DEFINE_integer("rl_steps", 5, "Timed RL steps (after a warm-up).")
_CATALOG_SIZES = flags.DEFINE_list(
    "catalog_sizes", ["10000", "1000000", "10000000"], "Catalog sizes of the catalog section."
)
_PALLAS_BATCH = flags.DEFINE_integer("pallas_batch", 256, "Requests B of the advantage mix.")
_PALLAS_GROUP = flags.DEFINE_integer("pallas_group", 16, "Group size G of the advantage mix.")
_PALLAS_CHANNELS = flags.DEFINE_integer("pallas_channels", 2, "Reward channels K.")
_PALLAS_BLOCK = flags.DEFINE_integer("pallas_block_b", 8, "Requests per Pallas grid block.")
_PALLAS_REPEATS = flags.DEFINE_integer("pallas_repeats", 20, "Timed calls; the median counts.")
_SCALING_DEVICES = flags.DEFINE_list(
    "scaling_devices", ["1", "2", "4", "8"], "Device counts of the scaling section."
)

QUICK = {
    "matmul_size": 256, "matmul_repeats": 3, "num_items": 300, "codebook_size": 8,
    "num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "history": 5,
    "history_encodings": ["item"], "train_batch": 16, "train_steps": 2, "decode_batch": 8,
    "length_buckets": ["2"], "mean_history": 2.0,
    "beam_sizes": ["10"], "decode_repeats": 1, "rl_batch": 8, "rl_group": 4, "rl_steps": 1,
    "catalog_sizes": ["300", "3000"],
    "pallas_batch": 16, "pallas_group": 4, "pallas_repeats": 2, "scaling_devices": ["1", "2"],
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The resolved flags: everything the figures depend on."""

    sections: tuple[str, ...]
    seed: int
    matmul_size: int
    matmul_repeats: int
    num_items: int
    codebook_size: int
    levels: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    history: int
    history_encodings: tuple[str, ...]
    train_batch: int
    train_steps: int
    length_buckets: tuple[int, ...]
    mean_history: float
    decode_batch: int
    beam_sizes: tuple[int, ...]
    k: int
    decode_repeats: int
    rl_batch: int
    rl_group: int
    rl_rollout: str
    rl_steps: int
    catalog_sizes: tuple[int, ...]
    pallas_batch: int
    pallas_group: int
    pallas_channels: int
    pallas_block_b: int
    pallas_repeats: int
    scaling_devices: tuple[int, ...]

    def matmul(self) -> float:
        """The machine's float32 GFLOP/s, measured now."""
        return matmul_gflops(self.matmul_size, self.matmul_repeats, self.seed)


_INT_LISTS = ("beam_sizes", "catalog_sizes", "scaling_devices", "length_buckets")


def resolve_sizes() -> Sizes:
    """The flags (with --quick defaults), checked before any JAX work."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Sizes):
        flag = flags.FLAGS[field.name]
        quick = _QUICK.value and field.name in QUICK and not flag.present
        values[field.name] = QUICK[field.name] if quick else flag.value
        if isinstance(values[field.name], list):
            convert = int if field.name in _INT_LISTS else str
            values[field.name] = tuple(convert(v) for v in values[field.name])
    unknown = sorted(set(values["sections"]) - set(SECTIONS.names()))
    if unknown:
        raise app.UsageError(
            f"unknown sections {unknown}; valid: {','.join(ALL_SECTIONS)}"
        )
    if min(values["beam_sizes"]) < values["k"]:
        raise app.UsageError(f"every beam size must be >= k={values['k']}")
    if values["rl_group"] > values["num_items"]:
        raise app.UsageError(f"rl_group must be <= num_items={values['num_items']}")
    for n in values["scaling_devices"]:
        if n < 1 or values["train_batch"] % n:
            raise app.UsageError(
                f"scaling device count {n} must be >= 1 and divide train_batch="
                f"{values['train_batch']}"
            )
    return Sizes(**values)


def best_seconds(run: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int, repeats: int, seed: int) -> float:
    """float32 GFLOP/s of one jitted n x n matmul, best of `repeats` (after a compile call)."""
    a_nn, b_nn = jax.random.normal(jax.random.key(seed), (2, n, n), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    matmul(a_nn, b_nn).block_until_ready()
    return 2 * n**3 / best_seconds(lambda: matmul(a_nn, b_nn).block_until_ready(), repeats) / 1e9


def flops(compiled: jax.stages.Compiled) -> float:
    """FLOPs of one call as XLA's cost analysis counts them (matmuls and elementwise ops)."""
    cost = compiled.cost_analysis()
    return float((cost[0] if isinstance(cost, list) else cost)["flops"])


def synthetic_codes(
    num_items: int, levels: int, codebook_size: int, seed: int
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Random codes (uniform on every level) plus the dedup level: (codes_nl, level_sizes)."""
    rng = np.random.default_rng(seed)
    codes_nl, dedup_size = append_dedup_level(
        rng.integers(0, codebook_size, (num_items, levels), dtype=np.int32)
    )
    return codes_nl, (codebook_size,) * levels + (dedup_size,)


def histories(history: int, num_items: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [rows, history]: right-aligned random histories of 1..history items."""
    history_bh = rng.integers(0, num_items, (rows, history)).astype(np.int32)
    lengths_b = rng.integers(1, history + 1, rows)
    history_bh[np.arange(history)[None] < (history - lengths_b)[:, None]] = PAD_ITEM
    return history_bh


def generator(
    sizes: Sizes, codes_nl: np.ndarray, level_sizes: tuple[int, ...], encoding: str
) -> SidGenerator:
    """The encoder-decoder of the benchmark's sizes over the SID table `codes_nl`."""
    return nnx.jit(  # one compile of the initialisers instead of one per parameter shape
        lambda: build_model(
            "encoder_decoder", codes_nl=codes_nl, level_sizes=level_sizes,
            max_history=sizes.history, rngs=nnx.Rngs(sizes.seed), num_layers=sizes.num_layers,
            d_model=sizes.d_model, num_heads=sizes.num_heads, d_ff=sizes.d_ff,
            history_encoding=encoding,
        )
    )()


def model_figures(model: SidGenerator, encoding: str) -> dict[str, Any]:
    return {
        "history_encoding": encoding,
        "history_tokens": model.max_history * (model.num_levels if encoding == "code" else 1),
        "parameters": sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))),
    }


def beam_figures(
    sizes: Sizes, model: SidGenerator, catalog: Catalog, beam_size: int,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """users/s of the jitted top-k decode (`serving.decode_fn`) of `model` over `catalog`."""
    graphdef, state = nnx.split(model)
    catalog = jax.device_put(catalog)
    requests = pack_histories(
        histories(sizes.history, catalog.num_items, sizes.decode_batch, rng),
        max_history=sizes.history, num_items=catalog.num_items,
    )
    decode = jax.jit(decode_fn(graphdef, beam_size=beam_size, k=sizes.k))
    compiled = decode.lower(state, catalog, *requests).compile()
    call_flops = flops(compiled)
    matmul = sizes.matmul()
    seconds = best_seconds(
        lambda: jax.block_until_ready(compiled(state, catalog, *requests)), sizes.decode_repeats
    )
    return {
        "beam_size": beam_size,
        "users_per_s": sizes.decode_batch / seconds,
        "seconds_per_user": seconds / sizes.decode_batch,
        "flops_per_user": call_flops / sizes.decode_batch,
        "gflops": call_flops / seconds / 1e9,
        "matmul_gflops": matmul,
        "fraction_of_matmul": call_flops / seconds / 1e9 / matmul,
    }


Row = tuple[str, str, str]  # (what, value, unit)
# A section measures with the resolved sizes and returns (figures for JSON, rows to print).
Section = Callable[[Sizes], tuple[Any, list[Row]]]
SECTIONS: Registry[Section] = Registry("benchmark section")


@SECTIONS.register("matmul")
def matmul_section(sizes: Sizes) -> tuple[float, list[Row]]:
    gflops = sizes.matmul()
    name = f"matmul {sizes.matmul_size}x{sizes.matmul_size} float32, best of {sizes.matmul_repeats}"
    return gflops, [(name, f"{gflops:.1f}", "GFLOP/s")]


@SECTIONS.register("sft")
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


def sft_figures(sizes: Sizes, model: SidGenerator) -> dict[str, Any]:
    """Throughput of the jitted SFT train step on a mesh over all devices."""
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
    compile_seconds = time.perf_counter() - start
    # Cost analysis counts the per-device program; every device runs one.
    step_flops = flops(compiled) * mesh.devices.size
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
        "examples_per_s": sizes.train_steps * sizes.train_batch / seconds,
        "flops_per_example": step_flops / sizes.train_batch,
        "gflops": gflops,
        "matmul_gflops": matmul,
        "fraction_of_matmul": gflops / matmul,
        "compile_seconds": compile_seconds,
    }


@SECTIONS.register("buckets")
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


@SECTIONS.register("rl")
def rl_section(sizes: Sizes) -> tuple[list[dict[str, Any]], list[Row]]:
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    catalog = jax.device_put(build_catalog(codes_nl, level_sizes))
    results, rows = [], []
    for encoding in sizes.history_encodings:
        model = generator(sizes, codes_nl, level_sizes, encoding)
        result = model_figures(model, encoding) | rl_figures(sizes, model, catalog)
        results.append(result)
        rows += [
            (f"RL step, {encoding} history, {sizes.rl_batch} requests x G={sizes.rl_group} "
             f"({sizes.rl_rollout} rollout, A2PO, 1 update)",
             f"{result['completions_per_s']:.1f}", "completions/s"),
            ("  FLOPs per completion (XLA cost analysis)",
             f"{result['flops_per_completion'] / 1e6:.1f}", "MFLOP"),
            (f"  fraction of matmul throughput ({result['matmul_gflops']:.1f} GFLOP/s just "
             "before)", f"{result['fraction_of_matmul']:.2f}", ""),
            ("  requests/s", f"{result['requests_per_s']:.1f}", "requests/s"),
        ] + [
            (f"  {phase} time per step ({share:.0%})", f"{1000 * seconds:.1f}", "ms")
            for phase in ("rollout", "reward", "update")
            for seconds in [result[f"{phase}_seconds"]]
            for share in [seconds / result["seconds_per_step"]]
        ]
    return results, rows


def _cosine_score(
    emb_nd: jax.Array, requests: RewardRequests, items_bg: jax.Array, logprob_bg: jax.Array
) -> jax.Array:
    """cos(candidate, target) of unit item embeddings [N, D]: a semantic channel's cost."""
    del logprob_bg
    cos_bg = jnp.einsum("bgd,bd->bg", emb_nd[safe_items(items_bg)], emb_nd[requests.target_b])
    return nan_where_padding(cos_bg, items_bg)


def rl_figures(sizes: Sizes, model: SidGenerator, catalog: Catalog) -> dict[str, Any]:
    """Throughput of the jitted RL step on a mesh over all devices."""
    rng = np.random.default_rng(sizes.seed)
    emb_nd = rng.normal(size=(catalog.num_items, 32)).astype(np.float32)
    emb_nd /= np.linalg.norm(emb_nd, axis=1, keepdims=True)
    channels = [
        REWARD_CHANNELS.get("rank")(None, {}),
        RewardChannel("cosine", -1.0, 1.0, "semantic", jnp.asarray(emb_nd), _cosine_score),
    ]
    estimator = ESTIMATORS.build("a2po", [ChannelSpec.of(c) for c in channels], business="rank")
    mesh = make_mesh()
    optimizer = make_optimizer(1e-5, warmup_steps=10, total_steps=1000)
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(sizes.seed), mesh, extra=init_extra(estimator)
    )
    settings = RLSettings(
        group_size=sizes.rl_group, rollout=sizes.rl_rollout, temperature=1.0,
        updates_per_batch=1, clip_eps=0.2, beta=0.04, semantic_sample_ratio=1.0,
        judge_seed=sizes.seed,
    )
    rl_step = make_rl_step(
        graphdef=graphdef, optimizer=optimizer, channels=channels, estimator=estimator,
        settings=settings, mesh=mesh, state_sharding=state_sharding,
    )
    ref_params = jax.tree.map(jnp.copy, state.params)  # the step donates the state
    history_bh = histories(sizes.history, catalog.num_items, sizes.rl_batch, rng)
    batch = host_to_global({
        "history": history_bh,
        "history_mask": history_bh != PAD_ITEM,
        "target": rng.integers(0, catalog.num_items, sizes.rl_batch).astype(np.int32),
        "user": np.arange(sizes.rl_batch, dtype=np.int32),
    }, mesh)
    args = (ref_params, channels, catalog, batch)
    compiled = rl_step.lower(state, *args).compile()
    # One update per step, so the scan over updates runs its body once, as counted.
    step_flops = flops(compiled) * mesh.devices.size
    state, metrics = compiled(state, *args)  # warm-up
    jax.block_until_ready(metrics)
    matmul = sizes.matmul()
    start = time.perf_counter()
    for _ in range(sizes.rl_steps):
        state, metrics = compiled(state, *args)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    completions = sizes.rl_steps * sizes.rl_batch * sizes.rl_group
    gflops = sizes.rl_steps * step_flops / seconds / 1e9
    phases = rl_phase_seconds(sizes, graphdef, state, estimator, channels, catalog, batch, settings)
    step_seconds = seconds / sizes.rl_steps
    return {
        "completions_per_s": completions / seconds,
        "requests_per_s": sizes.rl_batch / step_seconds,
        "seconds_per_step": step_seconds,
        "rollout_seconds": phases["rollout"],
        "reward_seconds": phases["reward"],
        # The rest of the fused step: pi_old and pi_ref scoring, the clipped update, optimizer.
        "update_seconds": max(step_seconds - phases["rollout"] - phases["reward"], 0.0),
        "flops_per_completion": step_flops / (sizes.rl_batch * sizes.rl_group),
        "gflops": gflops,
        "matmul_gflops": matmul,
        "fraction_of_matmul": gflops / matmul,
    }


def rl_phase_seconds(sizes: Sizes, graphdef: nnx.GraphDef, state: Any, estimator: Any,
                     channels: Sequence[RewardChannel], catalog: Catalog, batch: dict,
                     settings: RLSettings) -> dict[str, float]:
    """Seconds per step of the RL step's phases, each jitted and timed on its own: "rollout"
    (generate G candidates per request) and "reward" (R[B, G, K] and the advantages).

    The RL step fuses everything into one program, so its update time is the step's time minus
    these two; XLA may overlap phases inside the fused step, so the split is approximate.
    """

    @jax.jit
    def rollout(params, model_state, rng):
        policy = nnx.merge(graphdef, params, model_state)
        return generate(policy, catalog, batch["history"], batch["history_mask"], rng,
                        mode=settings.rollout, group_size=settings.group_size,
                        temperature=settings.temperature)

    @jax.jit
    def reward(reward_channels, items_bg, logprob_bg, estimator_state):
        requests = RewardRequests.from_batch(batch)
        rewards_bgk = reward_tensor(reward_channels, requests, items_bg, logprob_bg)
        return estimator(rewards_bgk, estimator_state)[0]

    def best_seconds(fn: Callable[[], Any]) -> float:
        jax.block_until_ready(fn())  # compile and warm up
        times = []
        for _ in range(max(sizes.rl_steps, 2)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    key = jax.random.key(sizes.seed)
    group = rollout(state.params, state.model_state, key)
    logprob_bg = jnp.zeros(group.items_bg.shape, jnp.float32)
    estimator_state = state.extra["estimator"]
    return {
        "rollout": best_seconds(lambda: rollout(state.params, state.model_state, key)),
        "reward": best_seconds(lambda: reward(channels, group.items_bg, logprob_bg,
                                              estimator_state)),
    }


@SECTIONS.register("beam")
def beam_section(sizes: Sizes) -> tuple[list[dict[str, Any]], list[Row]]:
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    catalog = build_catalog(codes_nl, level_sizes)
    results, rows = [], []
    for encoding in sizes.history_encodings:
        model = generator(sizes, codes_nl, level_sizes, encoding)
        rng = np.random.default_rng(sizes.seed)
        beams = [
            beam_figures(sizes, model, catalog, beam_size, rng) for beam_size in sizes.beam_sizes
        ]
        results.append(model_figures(model, encoding) | {"beams": beams})
        for beam in beams:
            rows += [
                (f"beam search, {encoding} history, beam {beam['beam_size']}, top {sizes.k}, "
                 f"batch {sizes.decode_batch}, {sizes.num_items:,} items",
                 f"{beam['users_per_s']:.1f}", "users/s"),
                ("  FLOPs per user (XLA cost analysis)",
                 f"{beam['flops_per_user'] / 1e6:.1f}", "MFLOP"),
                (f"  fraction of matmul throughput ({beam['matmul_gflops']:.1f} GFLOP/s just "
                 "before)", f"{beam['fraction_of_matmul']:.2f}", ""),
            ]
    return results, rows


@SECTIONS.register("catalog")
def catalog_section(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    encoding, beam_size = sizes.history_encodings[0], max(sizes.beam_sizes)
    results, rows = [], []
    for num_items in sizes.catalog_sizes:
        start = time.perf_counter()
        codes_nl, level_sizes = synthetic_codes(
            num_items, sizes.levels, sizes.codebook_size, sizes.seed
        )
        dedup_seconds = time.perf_counter() - start
        start = time.perf_counter()
        catalog = build_catalog(codes_nl, level_sizes)
        build_seconds = time.perf_counter() - start
        model = generator(sizes, codes_nl, level_sizes, encoding)
        beam = beam_figures(sizes, model, catalog, beam_size, np.random.default_rng(sizes.seed))
        trie_bytes = catalog.bytes_per_item() * num_items
        result = {
            "num_items": num_items,
            "dedup_level_size": level_sizes[-1],
            "codes_dedup_seconds": dedup_seconds,
            "trie_build_seconds": build_seconds,
            "trie_bytes": trie_bytes,
            "trie_bytes_per_item": catalog.bytes_per_item(),
            "sid_table_bytes_per_item": codes_nl.nbytes / num_items,
            **beam,
        }
        results.append(result)
        rows += [
            (f"catalog of {num_items:,} random SIDs ({'x'.join(map(str, level_sizes))}): "
             f"random codes + dedup, trie build",
             f"{dedup_seconds:.2f} + {build_seconds:.2f}", "s"),
            ("  trie size", f"{trie_bytes / 2**20:.1f}", "MiB"),
            ("  trie bytes per item (the model's SID table adds "
             f"{result['sid_table_bytes_per_item']:.0f})",
             f"{result['trie_bytes_per_item']:.1f}", "B/item"),
            (f"  beam search, {encoding} history, beam {beam_size}, top {sizes.k}",
             f"{beam['users_per_s']:.1f}", "users/s"),
        ]
    first, last = results[0], results[-1]
    growth = {
        "from_items": first["num_items"],
        "to_items": last["num_items"],
        "seconds_per_user": last["seconds_per_user"] / first["seconds_per_user"],
        "trie_bytes_per_item": last["trie_bytes_per_item"] / first["trie_bytes_per_item"],
    }
    span = f"{first['num_items']:,} -> {last['num_items']:,} items"
    rows += [
        (f"growth {span}: beam-search time per user", f"{growth['seconds_per_user']:.2f}", "x"),
        (f"growth {span}: trie bytes per item", f"{growth['trie_bytes_per_item']:.2f}", "x"),
    ]
    return {
        "history_encoding": encoding, "beam_size": beam_size, "catalogs": results,
        "growth": growth,
    }, rows


@SECTIONS.register("pallas")
def pallas_section(sizes: Sizes) -> tuple[dict[str, Any], list[Row]]:
    result = benchmark_advantages(
        sizes.pallas_batch, sizes.pallas_group, sizes.pallas_channels, sizes.pallas_block_b,
        repeats=sizes.pallas_repeats, seed=sizes.seed,
    )
    result |= {
        "backend": jax.default_backend(),
        "interpret": jax.default_backend() == "cpu",
        "xla_over_pallas": result["xla_s"] / result["pallas_s"],
    }
    mode = " (interpret mode)" if result["interpret"] else ""
    shape = (f"B={sizes.pallas_batch} G={sizes.pallas_group} K={sizes.pallas_channels}, "
             f"block {sizes.pallas_block_b}")
    return result, [
        (f"advantage mix, Pallas{mode}, {shape}, median of {sizes.pallas_repeats}",
         f"{result['pallas_s'] * 1e3:.3f}", "ms"),
        ("advantage mix, XLA", f"{result['xla_s'] * 1e3:.3f}", "ms"),
        ("  XLA time / Pallas time (> 1: Pallas faster)", f"{result['xla_over_pallas']:.2f}", ""),
    ]


@SECTIONS.register("scaling")
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
    shared = ("seed", "matmul_size", "matmul_repeats", "num_items", "codebook_size", "levels",
              "num_layers", "d_model", "num_heads", "d_ff", "history", "train_batch",
              "train_steps")
    argv = [f"--{name}={getattr(sizes, name)}" for name in shared]
    xla_flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "XLA_FLAGS": f"{xla_flags} --xla_force_host_platform_device_count={devices}".strip(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "sft.json")
        result = subprocess.run(
            [sys.executable, "-m", "experiments.benchmark", "--sections=sft",
             f"--history_encodings={encoding}", f"--out={out}", *argv],
            env=env, capture_output=True, text=True,
        )
        if result.returncode:
            raise RuntimeError(f"the {devices}-device run failed:\n{result.stderr[-4000:]}")
        with open(out) as f:
            (figures,) = json.load(f)["sft"]
    return figures


def table(rows: Sequence[Row]) -> str:
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>12}  {unit}".rstrip() for name, value, unit in rows)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sizes = resolve_sizes()
    figures: dict[str, Any] = {
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "load_average_start": os.getloadavg(),
        "sizes": dataclasses.asdict(sizes),
    }
    print(table([("device", f"{figures['device']} x{figures['device_count']}", ""),
                 ("load average (1, 5, 15 min) at start",
                  " ".join(f"{x:.2f}" for x in figures["load_average_start"]), "")]))
    for name in dict.fromkeys(sizes.sections):
        start = time.perf_counter()
        figures[name], rows = SECTIONS.get(name)(sizes)
        rows.append((f"  ({name} section: {time.perf_counter() - start:.0f} s)", "", ""))
        print(table(rows), flush=True)
    figures["load_average_end"] = os.getloadavg()
    print(table([("load average (1, 5, 15 min) at end",
                  " ".join(f"{x:.2f}" for x in figures["load_average_end"]), "")]))
    if _OUT.value:
        write_json(_OUT.value, figures)


if __name__ == "__main__":
    app.run(main)
