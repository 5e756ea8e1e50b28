"""Runs the benchmark sections a config names, prints their table and returns the figures."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import jax

from sgrec_jax.benchmarks.base import Section, Sizes, table
from sgrec_jax.benchmarks.decoding import beam_section, catalog_section, pallas_section
from sgrec_jax.benchmarks.profile import profile_section
from sgrec_jax.benchmarks.rl import rl_section
from sgrec_jax.benchmarks.training import (
    buckets_section,
    matmul_section,
    scaling_section,
    sft_section,
)
from sgrec_jax.core.provenance import provenance
from sgrec_jax.core.registry import Registry

SECTIONS: Registry[Section] = Registry("benchmark section")
for _name, _section in (
    ("matmul", matmul_section), ("sft", sft_section), ("buckets", buckets_section),
    ("rl", rl_section), ("beam", beam_section), ("catalog", catalog_section),
    ("pallas", pallas_section), ("scaling", scaling_section), ("profile", profile_section),
):
    SECTIONS.register(_name)(_section)


def resolve_sizes(config: Mapping[str, Any]) -> Sizes:
    """The benchmark config as Sizes, checked before any JAX work."""
    return Sizes.from_config(config, SECTIONS.names())


def run_benchmark(config: Mapping[str, Any]) -> dict[str, Any]:
    """Runs config.sections in order, printing each section's rows as it finishes; returns the
    figures (what --out writes): device, load averages, the sizes and one entry per section."""
    sizes = resolve_sizes(config)
    figures: dict[str, Any] = {
        "device": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "cpu_count": os.cpu_count(),
        "jax_version": jax.__version__,
        "load_average_start": os.getloadavg(),
        "sizes": dataclasses.asdict(sizes),
        # Taken first: the commit of the code measured (synthetic data, so no data hashes).
        "provenance": provenance({}),
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
    return figures
