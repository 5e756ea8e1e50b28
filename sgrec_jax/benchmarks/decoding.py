"""Benchmark sections of decoding and the advantage kernel: `beam` (the constrained top-k beam
search `serving.Recommender` runs), `catalog` (the same over growing synthetic catalogs: trie
build time and bytes per item) and `pallas` (the Pallas advantage kernel versus plain XLA)."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np

from sgrec_jax.benchmarks.base import (
    Row,
    Sizes,
    beam_figures,
    generator,
    model_figures,
    synthetic_codes,
)
from sgrec_jax.rl.pallas_advantage import benchmark_advantages
from sgrec_jax.sid.catalog import build_catalog


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
