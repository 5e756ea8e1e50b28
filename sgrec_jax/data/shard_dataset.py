"""The dataset of a run over shards: everything the stages read but the sequences.

With `config.data.source = "array_record"` the pipeline (`stages/pipeline.py`) opens a
`ShardDataset` on `config.data.shards_dir` instead of loading the `SeqRecDataset`. It has the
attributes the stages read (name, items, num_items, num_users, num_interactions, source_files,
stats()) plus `transitions`, all from the files `write_shards` wrote next to the examples, so
its memory is O(items + distinct training transitions), never O(interactions); the examples
stay in the shards (`ShardedExamples`). Asking it for `sequences` or `user_ids` raises a
ValueError that says so, rather than handing a stage an empty list.

What each stage reads from it (each stage's config check refuses what cannot run this way
before any work):
  sids               the item table (text, attributes) for the embeddings; refuses
                     sid.embeddings.source "collaborative", whose co-occurrence window spans
                     whole sequences.
  sft, sasrec        num_items; the training split streams, validation and test come from
                     the shards' splits (`data/sources.py`).
  popularity, item_transition, and every stage's test diagnostics
                     `transitions`, counted by the writer (`data/transitions.py`).
  rl                 refused: its reward models need every sequence in memory (the pCTR
                     models' training split, the synthetic world's truth tables of every
                     user's sequence and interests).

The manifest is the source of truth: the data are what the shards hold. What a config can still
get wrong is checked here, naming the manifest: max_history, and, when the writer recorded them
(`python -m experiments.write_shards` does), the data settings the shards were loaded with
(`load.dataset_settings`). The source files' hashes and the hashes of the manifest and side
tables go into `source_files`, hence into every result's provenance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from absl import logging
from etils import epath

from sgrec_jax.data.dataset import file_sha256
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.item_table import decode_items
from sgrec_jax.data.shards import (
    CATALOG_VERSION,
    ITEMS_TABLE,
    MANIFEST,
    TRANSITIONS_TABLE,
    read_manifest,
    read_side_table,
)
from sgrec_jax.data.transitions import TransitionCounts

REWRITE = "rewrite them with `python -m experiments.write_shards`"


class ShardDataset:
    """The catalog, statistics and training transitions of a shard directory (module docstring).

    Args:
      directory: the shard directory.
      max_history: the config's H, which must be the shards' (None: not checked).
      settings: the config's `load.dataset_settings`, checked against the writer's record
        when it has one (None: not checked).
    """

    def __init__(self, directory: str | epath.PathLike, *, max_history: int | None = None,
                 settings: Mapping[str, Any] | None = None):
        self.directory = epath.Path(directory)
        self.manifest = read_manifest(self.directory)
        path = self.directory / MANIFEST
        info = self.manifest["dataset"]
        if info.get("catalog_version") != CATALOG_VERSION:
            raise DataFormatError(path, "these shards lack what a run over shards reads besides "
                                        "the examples (item text, dataset statistics, training "
                                        "transitions; catalog version "
                                        f"{info.get('catalog_version')}, needed "
                                        f"{CATALOG_VERSION}): they were written before it "
                                        f"existed or by a bare ShardWriter; {REWRITE}")
        if max_history is not None and self.manifest["max_history"] != max_history:
            raise DataFormatError(path, f"shards have max_history {self.manifest['max_history']}"
                                        f", the config says {max_history}")
        if settings is not None:
            _check_settings(path, info.get("settings"), settings)
        self.name: str = info["name"]
        self.num_items, self.num_users = int(info["num_items"]), int(info["num_users"])
        self.num_interactions = int(info["num_interactions"])
        self.fingerprint: str = info["fingerprint"]
        self._stats = dict(info["stats"])

        items_path = self.directory / f"{ITEMS_TABLE}.npz"
        self.items = decode_items(read_side_table(self.directory, ITEMS_TABLE),
                                  info["bid_source"], items_path)
        if len(self.items) != self.num_items:
            raise DataFormatError(items_path, f"{len(self.items)} items, the manifest says "
                                              f"{self.num_items}")
        transitions_path = self.directory / f"{TRANSITIONS_TABLE}.npz"
        table = read_side_table(self.directory, TRANSITIONS_TABLE)
        try:
            self.transitions = TransitionCounts(self.num_items, table["from_t"], table["to_t"],
                                                table["count_t"])
        except (KeyError, ValueError) as error:
            raise DataFormatError(transitions_path, f"not a transition table of "
                                                    f"{self.num_items} items: {error}") from error
        self.source_files = {**info["source_files"], **{
            str(p): file_sha256(p) for p in (path, items_path, transitions_path)}}

    def stats(self) -> dict[str, float | int]:
        """`SeqRecDataset.stats()` of the dataset the shards were written from."""
        return dict(self._stats)

    def _on_disk(self, what: str) -> NoReturn:
        raise ValueError(f"the {what} of dataset {self.name!r} stay on disk with data.source "
                         f"'array_record' (shards in {self.directory}); what asked for them "
                         "needs the whole dataset in memory: run it with data.source 'memory'")

    @property
    def sequences(self) -> NoReturn:
        self._on_disk("sequences")

    @property
    def user_ids(self) -> NoReturn:
        self._on_disk("user ids")


def _check_settings(path: epath.Path, recorded: Mapping[str, Any] | None,
                    settings: Mapping[str, Any]) -> None:
    """DataFormatError naming each data.* field where the config differs from the writer's."""
    if recorded is None:
        logging.info("%s records no data settings: the config's data section is not checked "
                     "against the shards", path)
        return
    differences = []
    for key in sorted(set(recorded) | set(settings)):
        ours, theirs = settings.get(key), recorded.get(key)
        if key == "options" and isinstance(ours, dict) and isinstance(theirs, dict):
            differences += [f"data.options.{k}: shards {theirs.get(k)!r}, config {ours.get(k)!r}"
                            for k in sorted(set(ours) | set(theirs))
                            if ours.get(k) != theirs.get(k)]
        elif ours != theirs:
            differences.append(f"data.{key}: shards {theirs!r}, config {ours!r}")
    if differences:
        raise DataFormatError(path, f"shards were written from another dataset than the config "
                                    f"describes ({'; '.join(differences)}); fix the config or "
                                    f"{REWRITE}")
