"""ArrayRecord shards of leave-one-out examples: the on-disk form of data too big for memory.

`write_shards` turns a `SeqRecDataset` into a shard directory; `ShardedExamples` reads one split
of it by row number, which is all the Grain pipeline over shards (`data/shard_pipeline.py`)
needs. The in-memory path (`split.leave_one_out` + `data/pipeline.py`) is unchanged; the shards
hold exactly its examples, in its order, written user block by user block with that very
function, so the two paths cannot drift apart.

A shard directory:

  manifest.json                 written last (atomically): a directory without it is incomplete.
                                Record layout, max_history, the dataset's size and fingerprint,
                                and per split the files in order with their record and byte counts.
  train-00000.array_record ...  records of `examples_per_record` examples, at most
                                `examples_per_shard` examples per file
  valid-00000.array_record ...  (the validation and test examples: one per user)
  test-00000.array_record ...
  items.npz                     the item table: external ids, bids, text and attributes
                                (`data/item_table.py`; bid_source in the manifest)
  transitions.npz               the training split's transitions (last history item -> target)
                                with their counts (`data/transitions.py`)
  <name>.npz                    further side tables the writer was given (e.g. "sids": the SID
                                codes the catalog is built from)

`write_shards` also records in the manifest what the stages read besides the examples: the
dataset's summary statistics, the sha256 of the files it was read from, the data settings of the
config it was loaded with, and `catalog_version`. With them a run reads everything from the
shard directory and never loads the sequences (`data/shard_dataset.py`).

An example is little-endian int32: history [H] (right-aligned, PAD_ITEM on the left), target,
user: 4 (H + 2) bytes, the same fields as a `data.pipeline` batch row, which is what SFT,
SASRec, the pCTR model and RL (`RewardRequests.from_batch`) read; `history_mask` is derived.

A record packs K = `examples_per_record` consecutive examples (default 16); every record of a
split is full but its very last, so example r is slot r mod K of record r // K, whatever the
files. Why not one example per record: Grain's ArrayRecordDataSource keeps every file's chunk
index in memory once read, 20 to 50 bytes per record as measured here (records are written
`group_size:1`, each its own chunk, as Grain wants for random access): with one example per
record that index would grow with the data at a third of the in-memory rows' 88 bytes. K = 16
divides it by 16, halves the files (snappy compresses 1.4 KB records, not 88-byte ones: 50
against 107 bytes per example at H = 20) and reads faster (60k against 33k random examples/s
here), for K examples decoded per example used.

Why `array_record` directly and not a TFDS builder: tensorflow-datasets 4.9.10 turned out to be
TensorFlow-free for this path (import, `GeneratorBasedBuilder` with file_format="array_record",
`as_data_source`, never importing tensorflow), but it adds about twenty packages (pyarrow,
tensorflow-metadata, ...), stores tf.train.Example protos that are parsed one record at a time
(22k random examples/s read and decoded here against 60k/s for these records, 161 against 50
bytes per example) and shuffles every example through temporary files while writing (24k
against 1.1M examples/s), a shuffle the reader redoes each epoch anyway. See README "Data that
does not fit in memory".

Bad input never passes silently: a missing file, a file whose size or record count differs
from the manifest, a record Riegeli cannot read (its chunks are hashed) or of the wrong length,
or an id outside the catalog raises DataFormatError naming the file.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import grain
import numpy as np
from array_record.python import array_record_module
from etils import epath

from sgrec_jax.core.files import is_local
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.item_table import encode_items
from sgrec_jax.data.split import PAD_ITEM, Examples, leave_one_out
from sgrec_jax.data.transitions import TransitionCounter

MANIFEST = "manifest.json"
ITEMS_TABLE = "items"
TRANSITIONS_TABLE = "transitions"
# What `write_shards` records for a run over shards alone (data/shard_dataset.py); shards
# written without it (before it existed, or by a bare ShardWriter) still train, not run alone.
CATALOG_VERSION = 1
SPLITS = ("train", "valid", "test")
FORMAT = "sgrec_jax leave-one-out examples, ArrayRecord"
FORMAT_VERSION = 1
EXAMPLES_PER_RECORD = 16
WRITER_OPTIONS = "group_size:1,snappy"
_RECORD_DTYPE = np.dtype("<i4")
_FILE_SUFFIX = ".array_record"


def example_bytes(max_history: int) -> int:
    """Bytes of one example: history [H], target, user as int32."""
    return _RECORD_DTYPE.itemsize * (max_history + 2)


def encode(examples: Examples, user_offset: int = 0) -> np.ndarray:
    """int32 [n, H + 2] little-endian rows of `examples` (users shifted by user_offset)."""
    user = examples.user.astype(np.int64) + user_offset
    return np.concatenate(
        [examples.history, examples.target[:, None], user[:, None]], axis=1
    ).astype(_RECORD_DTYPE)


def decode(rows_nr: np.ndarray) -> dict[str, np.ndarray]:
    """A batch (history, history_mask, target, user) from rows int32 [n, H + 2]."""
    history = np.ascontiguousarray(rows_nr[:, :-2], dtype=np.int32)
    return {
        "history": history,
        "history_mask": history != PAD_ITEM,
        "target": rows_nr[:, -2].astype(np.int32),
        "user": rows_nr[:, -1].astype(np.int32),
    }


def dataset_fingerprint(dataset: SeqRecDataset) -> str:
    """sha256 of the catalog size and every user's sequence: what the examples derive from.

    The dataset's name is left out (configs may rename a dataset); a stage reading shards
    compares this with the manifest so that shards of other data are never trained on.
    """
    digest = hashlib.sha256(f"items {dataset.num_items} users {dataset.num_users}\n".encode())
    for seq in dataset.sequences:
        digest.update(np.int64(len(seq)).tobytes())
        digest.update(np.asarray(seq, dtype=_RECORD_DTYPE).tobytes())
    return digest.hexdigest()


# -- writing ------------------------------------------------------------------------------------


class _SplitWriter:
    """Writes one split's rows as records of `per_record` rows, `per_file` records a file.

    Rows are buffered until a record is full, across `write` calls, so only the split's last
    record (written by `finish`) may be short.
    """

    def __init__(self, directory: epath.Path, split: str, per_record: int, per_file: int):
        self.directory, self.split = directory, split
        self.per_record, self.per_file = per_record, per_file
        self.files: list[dict[str, Any]] = []
        self._writer: Any = None
        self._records = self._examples = 0
        self._pending = np.zeros((0, 0), _RECORD_DTYPE)

    def _open(self) -> None:
        name = f"{self.split}-{len(self.files):05d}{_FILE_SUFFIX}"
        self._writer = array_record_module.ArrayRecordWriter(
            str(self.directory / name), WRITER_OPTIONS
        )
        self.files.append({"name": name, "records": 0, "examples": 0, "bytes": 0})
        self._records = self._examples = 0

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            entry = self.files[-1]
            entry.update(records=self._records, examples=self._examples,
                         bytes=(self.directory / entry["name"]).stat().length)

    def _write_record(self, rows_nr: np.ndarray) -> None:
        if self._writer is None or self._records == self.per_file:
            self._close()
            self._open()
        self._writer.write(rows_nr.tobytes())
        self._records += 1
        self._examples += len(rows_nr)

    def write(self, rows_nr: np.ndarray) -> None:
        if self._pending.size:
            rows_nr = np.concatenate([self._pending, rows_nr])
        full = len(rows_nr) - len(rows_nr) % self.per_record
        for start in range(0, full, self.per_record):
            self._write_record(rows_nr[start : start + self.per_record])
        self._pending = rows_nr[full:]

    def finish(self) -> list[dict[str, Any]]:
        if len(self._pending):
            self._write_record(self._pending)
        if self._writer is None and not self.files:
            self._open()  # an empty split still has one (empty) file, so readers find it
        self._close()
        return self.files


def _local_directory(directory: str | epath.PathLike) -> epath.Path:
    """The shard directory, which must be local: the open-source array_record reads and writes
    files through local file descriptors (gs:// works for work directories, not for shards)."""
    if not is_local(directory):
        raise ValueError(f"shard directory {directory}: ArrayRecord shards must be on a local (or "
                         "mounted) filesystem; array_record cannot open URIs such as gs://")
    return epath.Path(directory)


class ShardWriter:
    """Writes leave-one-out examples into a shard directory, split by split, block by block.

        writer = ShardWriter(directory, max_history=20)
        writer.add("train", examples)          # as often as needed, in order
        writer.finish(dataset_info)            # side tables, then the manifest, last

    `write_shards` drives it from a SeqRecDataset; any other source of `Examples` can too.
    """

    def __init__(self, directory: str | epath.PathLike, *, max_history: int,
                 examples_per_shard: int = 1_000_000,
                 examples_per_record: int = EXAMPLES_PER_RECORD):
        if min(examples_per_shard, examples_per_record, max_history) < 1:
            raise ValueError(f"examples_per_shard {examples_per_shard}, examples_per_record "
                             f"{examples_per_record} and max_history {max_history} must be >= 1")
        self.directory = _local_directory(directory)
        if (self.directory / MANIFEST).exists():
            raise ValueError(f"{self.directory} already holds shards ({MANIFEST}); remove it or "
                             "choose another directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"*{_FILE_SUFFIX}"):  # from a write that did not finish
            stale.unlink()
        self.max_history = max_history
        self.examples_per_record = examples_per_record
        records_per_file = max(1, examples_per_shard // examples_per_record)
        self._writers = {split: _SplitWriter(self.directory, split, examples_per_record,
                                             records_per_file) for split in SPLITS}
        self._transitions = TransitionCounter()
        self._start = time.perf_counter()

    def add(self, split: str, examples: Examples, user_offset: int = 0) -> None:
        """Appends `examples` (users shifted by user_offset) to `split`; the training split's
        transitions are counted on the way (the "transitions" table)."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if examples.history.shape[1] != self.max_history:
            raise ValueError(f"examples have history width {examples.history.shape[1]}, the "
                             f"shards {self.max_history}")
        self._writers[split].write(encode(examples, user_offset))
        if split == "train":
            self._transitions.add_examples(examples.history, examples.target)

    def finish(self, dataset_info: Mapping[str, Any], items: Mapping[str, np.ndarray],
               side_tables: Mapping[str, Mapping[str, np.ndarray]] | None = None
               ) -> dict[str, Any]:
        """Closes the files, writes the side tables and the manifest; returns the manifest.

        dataset_info: name, num_users, num_items, num_interactions, fingerprint, bid_source
        (and, from `write_shards`, stats, source_files, settings, catalog_version).
        items: the item table (at least "ids" and "bids"; `item_table.encode_items`).
        side_tables: name -> arrays, each written as <name>.npz (e.g. {"sids": {"codes_nl": ...,
        "level_sizes": ...}}).
        """
        side_tables = dict(side_tables or {})
        reserved = (ITEMS_TABLE, TRANSITIONS_TABLE)
        if (any(name in reserved for name in side_tables)
                or not all(name.isidentifier() for name in side_tables)):
            raise ValueError(f"side table names must be identifiers other than "
                             f"{' and '.join(map(repr, reserved))}, got {sorted(side_tables)}")
        missing = {"name", "num_users", "num_items", "fingerprint"} - set(dataset_info)
        if missing:
            raise ValueError(f"dataset_info lacks {sorted(missing)}")
        files = {split: writer.finish() for split, writer in self._writers.items()}
        transitions = self._transitions.result(int(dataset_info["num_items"])).as_table()
        for name, arrays in {ITEMS_TABLE: items, TRANSITIONS_TABLE: transitions,
                             **side_tables}.items():
            _write_table(self.directory, name, arrays)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "example": {"dtype": "int32 little-endian", "fields": ["history", "target", "user"],
                        "bytes": example_bytes(self.max_history), "pad_item": PAD_ITEM},
            "examples_per_record": self.examples_per_record,
            "max_history": self.max_history,
            "writer_options": WRITER_OPTIONS,
            "dataset": dict(dataset_info),
            "splits": {split: {"num_examples": sum(f["examples"] for f in files[split]),
                               "files": files[split]} for split in SPLITS},
            "side_tables": [ITEMS_TABLE, TRANSITIONS_TABLE, *side_tables],
            "write_seconds": time.perf_counter() - self._start,
        }
        _write_text(self.directory / MANIFEST,
                    json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        return manifest


def write_shards(
    dataset: SeqRecDataset,
    directory: str | epath.PathLike,
    *,
    max_history: int,
    examples_per_shard: int = 1_000_000,
    examples_per_record: int = EXAMPLES_PER_RECORD,
    users_per_block: int = 10_000,
    side_tables: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes the leave-one-out examples of `dataset` as ArrayRecord shards; returns the manifest.

    Users are split `users_per_block` at a time with `split.leave_one_out`, so the writer holds
    one block's examples, never the whole training split. Any dataset a loader gives works,
    the synthetic world at any size included (WorldConfig.user_block_size bounds its own
    generation).

    Args:
      dataset: the source.
      directory: where the shards go (created); must not hold a manifest already.
      max_history: H, the history cap (config.data.max_history): part of every record.
      examples_per_shard: examples per file at most (1M examples of H = 20: about 53 MB).
      examples_per_record: K, examples packed in one record (module docstring).
      users_per_block: users split at once (bounds the writer's memory).
      side_tables: name -> arrays, each written as <name>.npz next to the shards; "items"
        and "transitions" are always written.
      settings: the data settings `dataset` was loaded with (`load.dataset_settings` of the
        config): recorded, so that a run over the shards can check its config against them.
    """
    if users_per_block < 1:
        raise ValueError(f"users_per_block must be >= 1, got {users_per_block}")
    writer = ShardWriter(directory, max_history=max_history,
                         examples_per_shard=examples_per_shard,
                         examples_per_record=examples_per_record)
    for first in range(0, dataset.num_users, users_per_block):
        last = min(first + users_per_block, dataset.num_users)
        block = dataclasses.replace(dataset, user_ids=dataset.user_ids[first:last],
                                    sequences=dataset.sequences[first:last], source_files={})
        splits = leave_one_out(block, max_history)
        for split in SPLITS:
            writer.add(split, getattr(splits, split), user_offset=first)
    return writer.finish(
        {"name": dataset.name, "num_users": dataset.num_users, "num_items": dataset.num_items,
         "num_interactions": dataset.num_interactions,
         "fingerprint": dataset_fingerprint(dataset), "bid_source": dataset.items.bid_source,
         "stats": dataset.stats(), "source_files": dict(dataset.source_files),
         "settings": None if settings is None else dict(settings),
         "catalog_version": CATALOG_VERSION},
        items=encode_items(dataset.items), side_tables=side_tables,
    )


def _write_table(directory: epath.Path, name: str, arrays: Mapping[str, np.ndarray]) -> None:
    with (directory / f"{name}.npz").open("wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def _write_text(path: epath.Path, text: str) -> None:
    """Writes `text` to a temporary name and renames it: `path` is complete or absent."""
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_text(text)
    tmp.rename(path)


# -- reading ------------------------------------------------------------------------------------


def read_manifest(directory: str | epath.PathLike) -> dict[str, Any]:
    """The manifest of a shard directory; DataFormatError when absent or not ours."""
    path = epath.Path(directory) / MANIFEST
    if not path.exists():
        raise DataFormatError(path, "no shard manifest (write the shards with "
                                    "`python -m experiments.write_shards`, or finish the write)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataFormatError(path, f"not JSON: {error}") from error
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise DataFormatError(path, f"not a version {FORMAT_VERSION} shard manifest of "
                                    f"{FORMAT!r}")
    return manifest


def read_side_table(directory: str | epath.PathLike, name: str) -> dict[str, np.ndarray]:
    """The arrays of side table `name` (e.g. "items", "sids") of a shard directory."""
    path = epath.Path(directory) / f"{name}.npz"
    if not path.exists():
        raise DataFormatError(path, f"no side table {name!r}")
    with path.open("rb") as f, np.load(f) as table:
        return {k: table[k] for k in table.files}


@dataclasses.dataclass(frozen=True)
class ShardFile:
    path: str
    records: int
    examples: int
    bytes: int


class ShardedExamples:
    """One split of a shard directory, read by row number: history, target, user of any rows.

    Opening checks every file against the manifest (present, same size, same record count), so
    a truncated shard fails here, before any training, with the file's name. Reads go through
    Grain's ArrayRecordDataSource; a read that fails is traced to the file and record.
    """

    def __init__(self, directory: str | epath.PathLike, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        self.directory = _local_directory(directory)
        self.split = split
        self.manifest = read_manifest(self.directory)
        self.max_history = int(self.manifest["max_history"])
        self.num_items = int(self.manifest["dataset"]["num_items"])
        self.per_record = int(self.manifest["examples_per_record"])
        self.example_bytes = example_bytes(self.max_history)
        info = self.manifest["splits"][split]
        self.files = tuple(ShardFile(str(self.directory / e["name"]), int(e["records"]),
                                     int(e["examples"]), int(e["bytes"])) for e in info["files"])
        for shard in self.files:
            _check_file(shard)
        self._num_examples = int(info["num_examples"])
        self._record_ends = list(np.cumsum([f.records for f in self.files]))
        self._num_records = int(self._record_ends[-1]) if self._record_ends else 0
        if (sum(f.examples for f in self.files) != self._num_examples
                or -(-self._num_examples // self.per_record) != self._num_records):
            raise DataFormatError(self.directory / MANIFEST,
                                  f"split {split}: file example and record counts disagree")
        # "path[0:n]" spares the source reopening every file to count its records.
        self._source = grain.sources.ArrayRecordDataSource(
            [f"{f.path}[0:{f.records}]" for f in self.files if f.records]
        ) if self._num_records else None

    def __len__(self) -> int:
        return self._num_examples

    @property
    def fingerprint(self) -> str:
        """Identifies the examples: the dataset's fingerprint, H and the split."""
        return f"{self.manifest['dataset']['fingerprint']}/H{self.max_history}/{self.split}"

    def locate(self, record: int) -> tuple[ShardFile, int]:
        """(file, position in it) of global record `record`."""
        index = bisect.bisect_right(self._record_ends, record)
        return self.files[index], record - (int(self._record_ends[index - 1]) if index else 0)

    def _record_size(self, records: np.ndarray) -> np.ndarray:
        """Examples in each of `records`: K, but for the split's last record."""
        last = self._num_examples - (self._num_records - 1) * self.per_record
        return np.where(records == self._num_records - 1, last, self.per_record)

    def read(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The batch of `rows` (global row numbers, any order): history [b, H], history_mask,
        target [b], user [b]."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not rows.size:
            return decode(np.zeros((0, self.max_history + 2), _RECORD_DTYPE))
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1} of {self.directory} {self.split}")
        keys, inverse = np.unique(rows // self.per_record, return_inverse=True)
        try:
            records = self._source.__getitems__(keys.tolist())
        except Exception as error:  # Riegeli raises RuntimeError naming no file.
            raise self._trace(keys, error) from error
        sizes = np.fromiter(map(len, records), np.int64, len(records))
        expected = self._record_size(keys) * self.example_bytes
        bad = np.flatnonzero(sizes != expected)
        if bad.size:
            shard, position = self.locate(int(keys[bad[0]]))
            raise DataFormatError(shard.path, f"record {position} has {sizes[bad[0]]} bytes, "
                                              f"expected {expected[bad[0]]}")
        rows_nr = np.frombuffer(b"".join(records), _RECORD_DTYPE).reshape(
            -1, self.max_history + 2)
        starts = np.concatenate([[0], np.cumsum(sizes // self.example_bytes)[:-1]])
        picked = rows_nr[starts[inverse] + rows % self.per_record]
        self._check_ids(rows // self.per_record, picked)
        return decode(picked)

    def _check_ids(self, records: np.ndarray, rows_nr: np.ndarray) -> None:
        n, users = self.num_items, int(self.manifest["dataset"]["num_users"])
        history, target, user = rows_nr[:, :-2], rows_nr[:, -2], rows_nr[:, -1]
        bad = (((history < PAD_ITEM) | (history >= n)).any(axis=1) | (target < 0)
               | (target >= n) | (user < 0) | (user >= users))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            shard, position = self.locate(int(records[row]))
            raise DataFormatError(shard.path, f"record {position} holds ids outside the "
                                              f"{n} items and {users} users: "
                                              f"{rows_nr[row].tolist()}")

    def _trace(self, keys: np.ndarray, error: Exception) -> DataFormatError:
        """The error of a failed batch read, traced to the first record that cannot be read."""
        for key in keys.tolist():
            try:
                self._source[key]
            except Exception as record_error:  # noqa: BLE001 (what Riegeli raises varies)
                shard, position = self.locate(key)
                return DataFormatError(shard.path, f"record {position} cannot be read: "
                                                   f"{record_error}")
        return DataFormatError(self.directory, f"reading {self.split} rows failed: {error}")

    def blocks(self, block_size: int = 65_536) -> Iterator[dict[str, np.ndarray]]:
        """Every example once, in order, `block_size` rows at a time."""
        for start in range(0, len(self), block_size):
            yield self.read(range(start, min(start + block_size, len(self))))

    def to_examples(self) -> Examples:
        """The whole split in memory (for the validation and test splits, one row per user)."""
        parts = list(self.blocks())
        if not parts:
            return Examples(np.zeros((0, self.max_history), np.int32),
                            np.zeros(0, np.int32), np.zeros(0, np.int32))
        return Examples(history=np.concatenate([p["history"] for p in parts]),
                        target=np.concatenate([p["target"] for p in parts]),
                        user=np.concatenate([p["user"] for p in parts]))


def _check_file(shard: ShardFile) -> None:
    """Fails, naming the file, unless it exists with the manifest's size and record count."""
    path = epath.Path(shard.path)
    if not path.exists():
        raise DataFormatError(path, "shard file listed in the manifest is missing")
    size = path.stat().length
    if size != shard.bytes:
        raise DataFormatError(path, f"shard has {size} bytes, the manifest says {shard.bytes} "
                                    "(truncated or rewritten)")
    try:
        reader = array_record_module.ArrayRecordReader(shard.path)
        count = reader.num_records()
        reader.close()
    except Exception as error:  # noqa: BLE001 (Riegeli raises RuntimeError or ValueError)
        raise DataFormatError(path, f"not a readable ArrayRecord file: {error}") from error
    if count != shard.records:
        raise DataFormatError(path, f"shard holds {count} records, the manifest says "
                                    f"{shard.records}")
