"""The "sids" stage: build (or reuse the cached) semantic IDs and the catalog for decoding."""

from __future__ import annotations

from absl import logging
from ml_collections import ConfigDict

from sgrec_jax.core.distributed import is_primary_process
from sgrec_jax.embeddings import EMBEDDING_SOURCES
from sgrec_jax.sid.build import build_semantic_ids, load_semantic_ids, save_semantic_ids
from sgrec_jax.sid.quantizers import QUANTIZERS
from sgrec_jax.stages.pipeline import RunContext, Stage

SID_SOURCES = ("quantizer", "index")
# Embedding sources that read the sequences, so not a run over shards (data/shard_dataset.py).
SEQUENCE_SOURCES = ("collaborative",)


def _check(config: ConfigDict) -> None:
    sid = config.sid
    if sid.source not in SID_SOURCES:
        raise ValueError(f"sid.source {sid.source!r} is not one of {', '.join(SID_SOURCES)}")
    if sid.source == "quantizer":
        EMBEDDING_SOURCES.resolve(sid.embeddings.source, sid.embeddings.options)
        QUANTIZERS.resolve(sid.quantizer, sid.quantizer_options)
        if sid.embeddings.source in SEQUENCE_SOURCES and config.data.source != "memory":
            raise ValueError(f"sid.embeddings.source {sid.embeddings.source!r} counts "
                             "co-occurrences over whole sequences, which data.source "
                             f"{config.data.source!r} keeps on disk; use an item-text source "
                             "('text', 'sentence_encoder'), 'npy', sid.source 'index', or "
                             "data.source 'memory'")
    elif not sid.index_path:
        raise ValueError("sid.source is 'index' but sid.index_path is empty")


def _run(context: RunContext) -> None:
    dataset = context.dataset
    sids = load_semantic_ids(context.workdir, dataset.num_items)
    if sids is None:
        sids = build_semantic_ids(
            dataset, context.config.sid, seed=context.config.seed, workdir=context.workdir,
            data_dir=context.config.data.dir,
        )
        if is_primary_process():
            save_semantic_ids(context.workdir, sids)
    else:
        logging.info("reusing the SIDs cached in %s", context.workdir)
    report = sids.report
    logging.info(
        "SIDs: %d items x %d levels %s; collision rate before dedup %.4f; usage per level %s",
        dataset.num_items, sids.num_levels, sids.level_sizes, report["collision_rate"],
        [round(report[f"usage_l{i}"], 3) for i in range(sids.num_levels - 1)],
    )
    context.artifacts["sids"] = sids
    context.artifacts["catalog"] = sids.catalog()
    context.metrics.update({f"sid/{k}": v for k, v in report.items()})


STAGE = Stage(run=_run, check=_check)
