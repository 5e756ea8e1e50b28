"""Speed figures of this machine and of the generator, measured in one run (not a test).

    python -m experiments.benchmark [--quick] [--out=bench.json] [--train_batch=256 ...]

Prints a table with
  (a) the machine's float32 matmul throughput: jitted n x n matmuls, best of several;
  (b) SFT train-step throughput (examples/s) of the encoder-decoder with the real jitted step
      (`create_train_state`, `make_train_step`, `sft_loss`), its FLOPs per example as XLA's cost
      analysis of the compiled step counts them (forward + backward + optimizer), and the
      achieved FLOP rate as a fraction of (a);
  (c) constrained beam-search throughput (users/s, top-k of the whole catalog) of the jitted
      decode that `serving.Recommender` runs and `serving.export` exports, for each beam width,
      with its FLOPs per user and fraction of (a);
for each history encoding ("item": one token per history item, "code": one per code). The
catalog is synthetic: `--num_items` items with random codes on `--levels` levels of
`--codebook_size`, plus the dedup level. (a) is measured again just before each timed section
and each fraction uses that figure, so on a shared machine the fractions stay meaningful when
the absolute rates do not.
`--quick` switches to tiny default sizes (flags given explicitly still win), for the test.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from sgrec_jax.core.files import write_json
from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.models.registry import build_model
from sgrec_jax.serving.recommender import decode_fn, pack_histories
from sgrec_jax.sid.build import SemanticIds, semantic_ids_from_codes
from sgrec_jax.train.sft_stage import sft_loss
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_train_step

_QUICK = flags.DEFINE_bool("quick", False, "Tiny default sizes (seconds; used by the test).")
_OUT = flags.DEFINE_string("out", None, "Also write the figures to this JSON file.")
_SEED = flags.DEFINE_integer("seed", 0, "Seeds the synthetic catalog, model and requests.")
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
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 128, "Requests per beam-search call.")
_BEAM_SIZES = flags.DEFINE_list("beam_sizes", ["20", "50"], "Beam widths to measure.")
_K = flags.DEFINE_integer("k", 10, "Items returned per request (<= every beam width).")
_DECODE_REPEATS = flags.DEFINE_integer("decode_repeats", 5, "Timed calls; the best counts.")

QUICK = {
    "matmul_size": 256, "matmul_repeats": 3, "num_items": 300, "codebook_size": 8,
    "num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "history": 5,
    "history_encodings": ["item"], "train_batch": 16, "train_steps": 2, "decode_batch": 8,
    "beam_sizes": ["10"], "decode_repeats": 1,
}


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The resolved flags: everything the figures depend on."""

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
    decode_batch: int
    beam_sizes: tuple[int, ...]
    k: int
    decode_repeats: int


def resolve_sizes() -> Sizes:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(Sizes):
        flag = flags.FLAGS[field.name]
        quick = _QUICK.value and field.name in QUICK and not flag.present
        values[field.name] = QUICK[field.name] if quick else flag.value
    values["history_encodings"] = tuple(values["history_encodings"])
    values["beam_sizes"] = tuple(int(b) for b in values["beam_sizes"])
    if min(values["beam_sizes"]) < values["k"]:
        raise app.UsageError(f"every beam size must be >= k={values['k']}")
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


def synthetic_sids(sizes: Sizes) -> SemanticIds:
    """Random codes (uniform on every level) plus the dedup level."""
    rng = np.random.default_rng(sizes.seed)
    codes_nl = rng.integers(0, sizes.codebook_size, (sizes.num_items, sizes.levels))
    return semantic_ids_from_codes(codes_nl, (sizes.codebook_size,) * sizes.levels)


def histories(sizes: Sizes, rows: int, rng: np.random.Generator) -> np.ndarray:
    """int32 [rows, history]: right-aligned random histories of 1..history items."""
    history_bh = rng.integers(0, sizes.num_items, (rows, sizes.history)).astype(np.int32)
    lengths_b = rng.integers(1, sizes.history + 1, rows)
    history_bh[np.arange(sizes.history)[None] < (sizes.history - lengths_b)[:, None]] = PAD_ITEM
    return history_bh


def measure_encoding(
    sizes: Sizes, sids: SemanticIds, encoding: str, matmul: Callable[[], float]
) -> dict[str, Any]:
    """Train-step and beam-search figures of the generator with one history encoding.

    `matmul()` measures the matmul GFLOP/s again just before each timed section, so on a shared
    machine every fraction compares two figures taken under the same load.
    """
    model = nnx.jit(
        lambda: build_model(
            "encoder_decoder", codes_nl=sids.codes_nl, level_sizes=sids.level_sizes,
            max_history=sizes.history, rngs=nnx.Rngs(sizes.seed), num_layers=sizes.num_layers,
            d_model=sizes.d_model, num_heads=sizes.num_heads, d_ff=sizes.d_ff,
            history_encoding=encoding,
        )
    )()
    parameters = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    rng = np.random.default_rng(sizes.seed)
    mesh = make_mesh()
    optimizer = make_optimizer(1e-3, warmup_steps=10, total_steps=1000, weight_decay=0.01)
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(sizes.seed), mesh
    )
    train_step = make_train_step(graphdef, sft_loss, optimizer, mesh, state_sharding)
    history_bh = histories(sizes, sizes.train_batch, rng)
    batch = host_to_global({
        "history": history_bh,
        "history_mask": history_bh != PAD_ITEM,
        "target": rng.integers(0, sizes.num_items, sizes.train_batch).astype(np.int32),
    }, mesh)
    start = time.perf_counter()
    compiled = train_step.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    step_flops = flops(compiled)
    state, metrics = compiled(state, batch)  # warm-up: first-call dispatch and allocations
    jax.block_until_ready(metrics)
    train_matmul = matmul()
    start = time.perf_counter()
    for _ in range(sizes.train_steps):
        state, metrics = compiled(state, batch)
    jax.block_until_ready(metrics)
    train_seconds = time.perf_counter() - start
    train_gflops = sizes.train_steps * step_flops / train_seconds / 1e9

    # The trained state, not `model`: the donated train step may have consumed model's arrays.
    graphdef, state = nnx.split(nnx.merge(graphdef, state.params, state.model_state))
    catalog = jax.device_put(sids.catalog())
    requests = pack_histories(
        histories(sizes, sizes.decode_batch, rng), max_history=sizes.history,
        num_items=sizes.num_items,
    )
    beams = []
    for beam_size in sizes.beam_sizes:
        # The function `serving.Recommender` jits and `serving.export` exports.
        decode = jax.jit(decode_fn(graphdef, beam_size=beam_size, k=sizes.k))
        compiled = decode.lower(state, catalog, *requests).compile()
        call_flops = flops(compiled)
        beam_matmul = matmul()
        seconds = best_seconds(
            lambda c=compiled: jax.block_until_ready(c(state, catalog, *requests)),
            sizes.decode_repeats,
        )
        beams.append({
            "beam_size": beam_size,
            "users_per_s": sizes.decode_batch / seconds,
            "flops_per_user": call_flops / sizes.decode_batch,
            "gflops": call_flops / seconds / 1e9,
            "matmul_gflops": beam_matmul,
            "fraction_of_matmul": call_flops / seconds / 1e9 / beam_matmul,
        })
    return {
        "history_encoding": encoding,
        "history_tokens": sizes.history * (sids.num_levels if encoding == "code" else 1),
        "parameters": parameters,
        "train": {
            "examples_per_s": sizes.train_steps * sizes.train_batch / train_seconds,
            "flops_per_example": step_flops / sizes.train_batch,
            "gflops": train_gflops,
            "matmul_gflops": train_matmul,
            "fraction_of_matmul": train_gflops / train_matmul,
            "compile_seconds": compile_seconds,
        },
        "beam_search": beams,
    }


def report(sizes: Sizes, figures: dict[str, Any]) -> str:
    """The figures as an aligned text table."""
    matmul = figures["matmul_gflops"]
    rows = [
        ("device", f"{figures['device']} x{figures['device_count']}", ""),
        (f"matmul {sizes.matmul_size}x{sizes.matmul_size} float32, best of "
         f"{sizes.matmul_repeats}", f"{matmul:.1f}", "GFLOP/s"),
    ]
    for result in figures["encodings"]:
        enc, train = result["history_encoding"], result["train"]
        model = (f"{enc} history ({result['history_tokens']} tokens), "
                 f"{result['parameters'] / 1e6:.2f}M params")
        rows += [
            (f"SFT train step, {model}, batch {sizes.train_batch}",
             f"{train['examples_per_s']:.1f}", "examples/s"),
            ("  FLOPs per example (XLA cost analysis)",
             f"{train['flops_per_example'] / 1e6:.1f}", "MFLOP"),
            ("  achieved", f"{train['gflops']:.1f}", "GFLOP/s"),
            (f"  fraction of matmul throughput ({train['matmul_gflops']:.1f} GFLOP/s just "
             "before)", f"{train['fraction_of_matmul']:.2f}", ""),
        ]
        for beam in result["beam_search"]:
            rows += [
                (f"beam search, {enc} history, beam {beam['beam_size']}, top {sizes.k}, "
                 f"batch {sizes.decode_batch}", f"{beam['users_per_s']:.1f}", "users/s"),
                ("  FLOPs per user (XLA cost analysis)",
                 f"{beam['flops_per_user'] / 1e6:.1f}", "MFLOP"),
                (f"  fraction of matmul throughput ({beam['matmul_gflops']:.1f} GFLOP/s just "
                 "before)", f"{beam['fraction_of_matmul']:.2f}", ""),
            ]
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>12}  {unit}".rstrip() for name, value, unit in rows)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sizes = resolve_sizes()
    sids = synthetic_sids(sizes)
    matmul = functools.partial(matmul_gflops, sizes.matmul_size, sizes.matmul_repeats, sizes.seed)
    figures: dict[str, Any] = {
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "sizes": dataclasses.asdict(sizes),
        "catalog_level_sizes": list(sids.level_sizes),
        "matmul_gflops": matmul(),
    }
    figures["encodings"] = [
        measure_encoding(sizes, sids, encoding, matmul) for encoding in sizes.history_encodings
    ]
    print(report(sizes, figures))
    if _OUT.value:
        write_json(_OUT.value, figures)


if __name__ == "__main__":
    app.run(main)
