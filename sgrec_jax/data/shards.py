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
  train-00000.array_record ...  one record per example, `examples_per_shard` per file
  valid-00000.array_record ...  (the validation and test examples: one per user)
  test-00000.array_record ...
  items.npz                     the item table: external ids and bids (bid_source in the manifest)
  <name>.npz                    further side tables the writer was given (e.g. "sids": the SID
                                codes the catalog is built from)

A record is one example as little-endian int32: history [H] (right-aligned, PAD_ITEM on the
left), target, user: 4 (H + 2) bytes, the same fields as a `data.pipeline` batch row, which is
what SFT, SASRec, the pCTR model and RL (`RewardRequests.from_batch`) read; `history_mask` is
derived. Files are written with `group_size:1` (every record its own chunk, as Grain's
ArrayRecordDataSource wants for random access) and snappy compression.

Why `array_record` directly and not a TFDS builder: tensorflow-datasets 4.9.10 turned out to be
TensorFlow-free for this path (import, `GeneratorBasedBuilder` with file_format="array_record",
`as_data_source`, never importing tensorflow), but it adds about twenty packages (pyarrow,
tensorflow-metadata, ...), stores tf.train.Example protos that are parsed one record at a time
(22k examples/s read+decode here against 69k/s for these fixed records, 161 against 115 bytes per
example) and shuffles every example through temporary files while writing (24k against 400k
examples/s), a shuffle the reader redoes each epoch anyway. See README "Data that does not fit
in memory".

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

from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import PAD_ITEM, Examples, leave_one_out

MANIFEST = "manifest.json"
ITEMS_TABLE = "items"
SPLITS = ("train", "valid", "test")
FORMAT = "sgrec_jax leave-one-out examples, ArrayRecord"
FORMAT_VERSION = 1
WRITER_OPTIONS = "group_size:1,snappy"
_RECORD_DTYPE = np.dtype("<i4")
_FILE_SUFFIX = ".array_record"


def record_bytes(max_history: int) -> int:
    """Bytes of one record: history [H], target, user as int32."""
    return _RECORD_DTYPE.itemsize * (max_history + 2)


def encode(examples: Examples, user_offset: int = 0) -> np.ndarray:
    """int32 [n, H + 2] little-endian records of `examples` (users shifted by user_offset)."""
    user = examples.user.astype(np.int64) + user_offset
    return np.concatenate(
        [examples.history, examples.target[:, None], user[:, None]], axis=1
    ).astype(_RECORD_DTYPE)


def decode(records_nr: np.ndarray) -> dict[str, np.ndarray]:
    """A batch (history, history_mask, target, user) from records int32 [n, H + 2]."""
    history = np.ascontiguousarray(records_nr[:, :-2], dtype=np.int32)
    return {
        "history": history,
        "history_mask": history != PAD_ITEM,
        "target": records_nr[:, -2].astype(np.int32),
        "user": records_nr[:, -1].astype(np.int32),
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
    """Writes one split's records into files of at most `per_shard` records, in order."""

    def __init__(self, directory: epath.Path, split: str, per_shard: int):
        self.directory, self.split, self.per_shard = directory, split, per_shard
        self.files: list[dict[str, Any]] = []
        self._writer: Any = None
        self._count = 0

    def _open(self) -> None:
        name = f"{self.split}-{len(self.files):05d}{_FILE_SUFFIX}"
        self._writer = array_record_module.ArrayRecordWriter(
            str(self.directory / name), WRITER_OPTIONS
        )
        self.files.append({"name": name, "records": 0, "bytes": 0})
        self._count = 0

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            entry = self.files[-1]
            entry["records"] = self._count
            entry["bytes"] = (self.directory / entry["name"]).stat().length

    def write(self, records_nr: np.ndarray) -> None:
        data = memoryview(records_nr.tobytes())
        size = records_nr.shape[1] * _RECORD_DTYPE.itemsize
        for row in range(records_nr.shape[0]):
            if self._writer is None or self._count == self.per_shard:
                self._close()
                self._open()
            self._writer.write(bytes(data[row * size : (row + 1) * size]))
            self._count += 1

    def finish(self) -> list[dict[str, Any]]:
        if self._writer is None and not self.files:
            self._open()  # an empty split still has one (empty) file, so readers find it
        self._close()
        return self.files


class ShardWriter:
    """Writes leave-one-out examples into a shard directory, split by split, block by block.

        writer = ShardWriter(directory, max_history=20)
        writer.add("train", examples)          # as often as needed, in order
        writer.finish(dataset_info)            # side tables, then the manifest, last

    `write_shards` drives it from a SeqRecDataset; any other source of `Examples` can too.
    """

    def __init__(self, directory: str | epath.PathLike, *, max_history: int,
                 examples_per_shard: int = 1_000_000):
        if examples_per_shard < 1 or max_history < 1:
            raise ValueError(f"examples_per_shard {examples_per_shard} and max_history "
                             f"{max_history} must be >= 1")
        self.directory = epath.Path(directory)
        if (self.directory / MANIFEST).exists():
            raise ValueError(f"{self.directory} already holds shards ({MANIFEST}); remove it or "
                             "choose another directory")
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob(f"*{_FILE_SUFFIX}"):  # from a write that did not finish
            stale.unlink()
        self.max_history = max_history
        self._writers = {split: _SplitWriter(self.directory, split, examples_per_shard)
                         for split in SPLITS}
        self._start = time.perf_counter()

    def add(self, split: str, examples: Examples, user_offset: int = 0) -> None:
        """Appends `examples` (users shifted by user_offset) to `split`."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if examples.history.shape[1] != self.max_history:
            raise ValueError(f"examples have history width {examples.history.shape[1]}, the "
                             f"shards {self.max_history}")
        self._writers[split].write(encode(examples, user_offset))

    def finish(self, dataset_info: Mapping[str, Any], items: Mapping[str, np.ndarray],
               side_tables: Mapping[str, Mapping[str, np.ndarray]] | None = None
               ) -> dict[str, Any]:
        """Closes the files, writes the side tables and the manifest; returns the manifest.

        dataset_info: name, num_users, num_items, num_interactions, fingerprint, bid_source.
        items: the item table ("ids", "bids"). side_tables: name -> arrays, each written as
        <name>.npz (e.g. {"sids": {"codes_nl": ..., "level_sizes": ...}}).
        """
        side_tables = dict(side_tables or {})
        if ITEMS_TABLE in side_tables or not all(name.isidentifier() for name in side_tables):
            raise ValueError(f"side table names must be identifiers other than "
                             f"{ITEMS_TABLE!r}, got {sorted(side_tables)}")
        missing = {"name", "num_users", "num_items", "fingerprint"} - set(dataset_info)
        if missing:
            raise ValueError(f"dataset_info lacks {sorted(missing)}")
        files = {split: writer.finish() for split, writer in self._writers.items()}
        for name, arrays in {ITEMS_TABLE: items, **side_tables}.items():
            _write_table(self.directory, name, arrays)
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "record": {"dtype": "int32 little-endian", "fields": ["history", "target", "user"],
                       "bytes": record_bytes(self.max_history), "pad_item": PAD_ITEM},
            "max_history": self.max_history,
            "writer_options": WRITER_OPTIONS,
            "dataset": dict(dataset_info),
            "splits": {split: {"num_examples": sum(f["records"] for f in files[split]),
                               "files": files[split]} for split in SPLITS},
            "side_tables": [ITEMS_TABLE, *side_tables],
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
    users_per_block: int = 10_000,
    side_tables: Mapping[str, Mapping[str, np.ndarray]] | None = None,
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
      examples_per_shard: records per file (1M examples of H = 20 are about 115 MB).
      users_per_block: users split at once (bounds the writer's memory).
      side_tables: name -> arrays, each written as <name>.npz next to the shards; "items"
        (external ids and bids) is always written.
    """
    if users_per_block < 1:
        raise ValueError(f"users_per_block must be >= 1, got {users_per_block}")
    writer = ShardWriter(directory, max_history=max_history,
                         examples_per_shard=examples_per_shard)
    for first in range(0, dataset.num_users, users_per_block):
        last = min(first + users_per_block, dataset.num_users)
        block = dataclasses.replace(dataset, user_ids=dataset.user_ids[first:last],
                                    sequences=dataset.sequences[first:last], source_files={})
        splits = leave_one_out(block, max_history)
        for split in SPLITS:
            writer.add(split, getattr(splits, split), user_offset=first)
    items = dataset.items
    return writer.finish(
        {"name": dataset.name, "num_users": dataset.num_users, "num_items": dataset.num_items,
         "num_interactions": dataset.num_interactions,
         "fingerprint": dataset_fingerprint(dataset), "bid_source": items.bid_source},
        items={"ids": np.asarray(items.ids, dtype=np.str_),
               "bids": np.asarray(items.bids, dtype=np.float32)},
        side_tables=side_tables,
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
        self.directory = epath.Path(directory)
        self.split = split
        self.manifest = read_manifest(self.directory)
        self.max_history = int(self.manifest["max_history"])
        self.num_items = int(self.manifest["dataset"]["num_items"])
        self.record_bytes = record_bytes(self.max_history)
        entries = self.manifest["splits"][split]["files"]
        self.files = tuple(ShardFile(str(self.directory / e["name"]), int(e["records"]),
                                     int(e["bytes"])) for e in entries)
        for shard in self.files:
            _check_file(shard)
        self._ends = list(np.cumsum([f.records for f in self.files]))
        # "path[0:n]" spares the source reopening every file to count its records.
        self._source = grain.sources.ArrayRecordDataSource(
            [f"{f.path}[0:{f.records}]" for f in self.files if f.records]
        ) if len(self) else None

    def __len__(self) -> int:
        return int(self._ends[-1]) if self._ends else 0

    @property
    def fingerprint(self) -> str:
        """Identifies the examples: the dataset's fingerprint, H and the split."""
        return f"{self.manifest['dataset']['fingerprint']}/H{self.max_history}/{self.split}"

    def locate(self, row: int) -> tuple[ShardFile, int]:
        """(file, position in it) of global row `row`."""
        index = bisect.bisect_right(self._ends, row)
        return self.files[index], row - (int(self._ends[index - 1]) if index else 0)

    def read(self, rows: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The batch of `rows` (global row numbers, any order): history [b, H], history_mask,
        target [b], user [b]."""
        rows = [int(r) for r in rows]
        if not rows:
            return decode(np.zeros((0, self.max_history + 2), _RECORD_DTYPE))
        if self._source is None or min(rows) < 0 or max(rows) >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1} of {self.directory} {self.split}")
        try:
            records = self._source.__getitems__(rows)
        except Exception as error:  # Riegeli raises RuntimeError naming no file.
            raise self._trace(rows, error) from error
        sizes = np.fromiter(map(len, records), np.int64, len(records))
        bad = np.flatnonzero(sizes != self.record_bytes)
        if bad.size:
            shard, position = self.locate(rows[bad[0]])
            raise DataFormatError(shard.path, f"record {position} has {sizes[bad[0]]} bytes, "
                                              f"expected {self.record_bytes}")
        records_nr = np.frombuffer(b"".join(records), _RECORD_DTYPE).reshape(len(rows), -1)
        self._check_ids(rows, records_nr)
        return decode(records_nr)

    def _check_ids(self, rows: list[int], records_nr: np.ndarray) -> None:
        n, users = self.num_items, int(self.manifest["dataset"]["num_users"])
        history, target, user = records_nr[:, :-2], records_nr[:, -2], records_nr[:, -1]
        bad = (((history < PAD_ITEM) | (history >= n)).any(axis=1) | (target < 0)
               | (target >= n) | (user < 0) | (user >= users))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            shard, position = self.locate(rows[row])
            raise DataFormatError(shard.path, f"record {position} holds ids outside the "
                                              f"{n} items and {users} users: "
                                              f"{records_nr[row].tolist()}")

    def _trace(self, rows: list[int], error: Exception) -> DataFormatError:
        """The error of a failed batch read, traced to the first record that cannot be read."""
        for row in rows:
            try:
                self._source[row]
            except Exception as row_error:  # noqa: BLE001 (what Riegeli raises varies)
                shard, position = self.locate(row)
                return DataFormatError(shard.path, f"record {position} cannot be read: "
                                                   f"{row_error}")
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
