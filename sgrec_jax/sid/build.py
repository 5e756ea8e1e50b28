"""Semantic IDs for a dataset, end to end: embeddings -> quantizer (or a precomputed index) ->
dedup level -> catalog trie, with the report the protocol asks for.

The result is cached in the work directory (`sids.npz` + `sids.json`, written atomically), so a
resumed run reuses the exact same SIDs its checkpoints were trained with.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from etils import epath

from sgrec_jax.core.files import read_npz, write_json, write_npz
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.sid_index import load_sid_index
from sgrec_jax.embeddings import item_embeddings
from sgrec_jax.sid.catalog import Catalog, build_catalog
from sgrec_jax.sid.dedup import append_dedup_level
from sgrec_jax.sid.metrics import sid_metrics
from sgrec_jax.sid.quantizers import quantize

CODES_FILE = "sids.npz"
REPORT_FILE = "sids.json"


@dataclasses.dataclass(frozen=True)
class SemanticIds:
    """Item SIDs with the dedup level, so that SID <-> item is a bijection.

    Attributes:
      codes_nl: int32 [num_items, L] codes; the last column is the dedup level.
      level_sizes: vocabulary size of each of the L levels.
      report: collision rate before dedup, codebook usage per level, timings, catalog size.
    """

    codes_nl: np.ndarray
    level_sizes: tuple[int, ...]
    report: Mapping[str, Any]

    @property
    def num_levels(self) -> int:
        return self.codes_nl.shape[1]

    def catalog(self) -> Catalog:
        return build_catalog(self.codes_nl, self.level_sizes)


def semantic_ids_from_codes(codes_nl: np.ndarray, codebook_sizes: tuple[int, ...]) -> SemanticIds:
    """Appends the dedup level to raw codes and reports their quality before dedup."""
    report = dict(sid_metrics(codes_nl, list(codebook_sizes)))
    codes, dedup_size = append_dedup_level(codes_nl)
    level_sizes = (*codebook_sizes, dedup_size)
    catalog = build_catalog(codes, level_sizes)
    report.update(
        dedup_level_size=dedup_size,
        catalog_bytes_per_item=catalog.bytes_per_item(),
        num_items=int(codes.shape[0]),
    )
    return SemanticIds(codes, level_sizes, report)


def build_semantic_ids(
    dataset: SeqRecDataset, config: Any, *, seed: int, workdir: str | os.PathLike | None,
    data_dir: str | os.PathLike = "",
) -> SemanticIds:
    """Builds SIDs as `config` (the `sid` section of an experiment config) says.

    config.source: "quantizer" (embeddings from `config.embeddings`, then `config.quantizer`) or
    "index" (a precomputed LETTER-format index at `config.index_path`, relative to `data_dir`
    unless absolute).
    """
    start = time.perf_counter()
    if config.source == "index":
        path = os.path.join(data_dir, config.index_path)
        index = load_sid_index(path, dataset.num_items, config.codebook_size)
        sids = semantic_ids_from_codes(index.codes, tuple(index.codebook_sizes))
        timings = {}
    elif config.source == "quantizer":
        emb = config.embeddings
        embeddings_nd = item_embeddings(
            emb.source, dataset, dim=emb.dim, seed=seed, workdir=workdir, **dict(emb.options)
        )
        embedded = time.perf_counter()
        codes_nl = quantize(
            config.quantizer, embeddings_nd, levels=config.levels,
            codebook_size=config.codebook_size, seed=seed, source=f"{emb.source} embeddings",
            **dict(config.quantizer_options),
        )
        sids = semantic_ids_from_codes(codes_nl, (config.codebook_size,) * config.levels)
        timings = {
            "embedding_seconds": embedded - start,
            "quantizer_seconds": time.perf_counter() - embedded,
        }
    else:
        raise ValueError(f"sid.source must be 'quantizer' or 'index', got {config.source!r}")
    report = {**sids.report, **timings, "total_seconds": time.perf_counter() - start}
    return dataclasses.replace(sids, report=report)


def save_semantic_ids(workdir: str | os.PathLike, sids: SemanticIds) -> None:
    write_npz(os.path.join(workdir, CODES_FILE), codes_nl=sids.codes_nl,
              level_sizes=np.asarray(sids.level_sizes, np.int32))
    write_json(os.path.join(workdir, REPORT_FILE), dict(sids.report))


def load_semantic_ids(workdir: str | os.PathLike, num_items: int) -> SemanticIds | None:
    """The SIDs cached in `workdir`, or None if there are none yet."""
    path = epath.Path(workdir) / CODES_FILE
    if not path.exists():
        return None
    try:
        f = read_npz(path)
        codes_nl, level_sizes = f["codes_nl"], tuple(int(v) for v in f["level_sizes"])
        report = json.loads((epath.Path(workdir) / REPORT_FILE).read_text())
    except (OSError, ValueError, KeyError) as e:
        raise DataFormatError(path, f"unreadable SID cache ({e}); delete it to rebuild") from e
    if codes_nl.shape[0] != num_items:
        raise DataFormatError(
            path, f"cached SIDs cover {codes_nl.shape[0]} items but the dataset has {num_items}; "
            "this work directory belongs to another dataset",
        )
    return SemanticIds(codes_nl, level_sizes, report)
