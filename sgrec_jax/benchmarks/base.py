"""What every benchmark section shares: the resolved sizes, timing helpers, the synthetic
catalog, histories and generator, and the printed table's rows."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.models.registry import build_model
from sgrec_jax.rl.rollout import ROLLOUT_MODES
from sgrec_jax.serving.recommender import decode_fn, pack_histories
from sgrec_jax.sid.catalog import Catalog
from sgrec_jax.sid.dedup import append_dedup_level

Row = tuple[str, str, str]  # (what, value, unit)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The resolved benchmark config (experiments/configs/benchmark.py says what each field
    is): everything the figures depend on."""

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
    head_dim: int
    d_ff: int
    dtype: str
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

    @classmethod
    def from_config(cls, config: Mapping[str, Any], sections: Iterable[str]) -> Sizes:
        """The config's fields, checked before any JAX work against the valid `sections`.

        Tuples of strings also take comma-separated text (ml_collections reads
        `--config.sections=sft,beam` as the one string "sft,beam")."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            value = config[field.name]
            if isinstance(value, (list, tuple)):
                value = tuple(
                    part.strip() for v in value for part in str(v).split(",") if part.strip()
                ) if field.name in ("sections", "history_encodings") else tuple(
                    int(v) for v in value
                )
            values[field.name] = value
        unknown = sorted(set(values["sections"]) - set(sections))
        if unknown:
            raise ValueError(f"unknown sections {unknown}; valid: {','.join(sections)}")
        if values["rl_rollout"] not in ROLLOUT_MODES:
            raise ValueError(f"rl_rollout must be one of {', '.join(ROLLOUT_MODES)}, got "
                             f"{values['rl_rollout']!r}")
        if min(values["beam_sizes"]) < values["k"]:
            raise ValueError(f"every beam size must be >= k={values['k']}")
        if values["rl_group"] > values["num_items"]:
            raise ValueError(f"rl_group must be <= num_items={values['num_items']}")
        for n in values["scaling_devices"]:
            if n < 1 or values["train_batch"] % n:
                raise ValueError(
                    f"scaling device count {n} must be >= 1 and divide train_batch="
                    f"{values['train_batch']}"
                )
        return cls(**values)

    def matmul(self) -> float:
        """The machine's float32 GFLOP/s, measured now."""
        return matmul_gflops(self.matmul_size, self.matmul_repeats, self.seed)


# A section measures with the resolved sizes and returns (figures for JSON, rows to print).
Section = Callable[[Sizes], tuple[Any, list[Row]]]


def best_seconds(run: Callable[[], Any], repeats: int) -> float:
    """The fastest of `repeats` timed calls of `run` (which must block until done)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def matmul_gflops(n: int, repeats: int, seed: int, dtype: str = "float32") -> float:
    """GFLOP/s of one jitted n x n matmul in `dtype` (inputs and output), best of `repeats`
    (after a compile call)."""
    a_nn, b_nn = jax.random.normal(jax.random.key(seed), (2, n, n), jnp.float32).astype(dtype)
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
            d_model=sizes.d_model, num_heads=sizes.num_heads, head_dim=sizes.head_dim,
            d_ff=sizes.d_ff, dtype=sizes.dtype, history_encoding=encoding,
        )
    )()


def model_figures(model: SidGenerator, encoding: str) -> dict[str, Any]:
    return {
        "history_encoding": encoding,
        "dtype": model.options.dtype.name,
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

def table(rows: Sequence[Row]) -> str:
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>12}  {unit}".rstrip() for name, value, unit in rows)
