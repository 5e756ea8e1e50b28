"""The Grain pipeline over shards: Grain's global shuffle, the in-memory epochs' examples, resume,
per-process sharding (in one process and in two joined by jax.distributed), bad shards."""

import itertools
import os
import pathlib
import subprocess
import sys

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.pipeline import gather, iterator_state, restore_iterator_state, train_iterator
from sgrec_jax.data.shard_pipeline import epoch_rows, shard_train_iterator
from sgrec_jax.data.shards import ShardedExamples, ShardWriter
from sgrec_jax.data.split import Examples
from tests.data.test_pipeline import B, N, assert_same_batches, make_examples, take
from tests.data.test_shards import corrupt
from tests.reliability.runs import free_port
from tests.train.test_checkpointing import BATCH, train
from tests.train.test_checkpointing import examples as model_examples
from tests.train.test_train_state import setup

REPO = pathlib.Path(__file__).resolve().parents[2]


def write_examples(directory, examples: Examples, per_shard: int = 20) -> pathlib.Path:
    """`examples` as the train split of a shard directory: records of 4 examples, files of
    `per_shard` examples."""
    writer = ShardWriter(directory, max_history=examples.history.shape[1],
                         examples_per_shard=per_shard, examples_per_record=4)
    writer.add("train", examples)
    writer.finish({"name": "rows", "num_users": int(examples.user.max()) + 1,
                   "num_items": int(examples.history.max()) + 1 + int(examples.target.max()),
                   "fingerprint": "rows"}, items={"bids": np.zeros(1)})
    return pathlib.Path(directory)


@pytest.fixture(scope="module")
def examples() -> Examples:
    return make_examples()  # 103 rows, target = row number, every row distinct


@pytest.fixture(scope="module")
def shards(examples, tmp_path_factory) -> ShardedExamples:
    return ShardedExamples(write_examples(tmp_path_factory.mktemp("rows"), examples))


def single(shards, **kwargs):
    return shard_train_iterator(shards, shard_index=0, shard_count=1, **kwargs)


def test_epoch_order_is_grains_global_shuffle():
    n, seed = 50, 11
    grains = grain.MapDataset.range(n).shuffle(seed=seed).repeat()
    for epoch in range(3):
        rows = epoch_rows(n, seed, epoch, np.arange(n))
        np.testing.assert_array_equal(rows, [grains[epoch * n + p] for p in range(n)])
        assert sorted(rows) == list(range(n))


def test_batches_are_the_examples_at_the_shuffled_rows(examples, shards):
    batches = take(single(shards, batch_size=B, seed=3), 30)  # 2.5 epochs
    per_epoch = N // B
    for step, batch in enumerate(batches):
        epoch, k = divmod(step, per_epoch)
        rows = epoch_rows(N, 3, epoch, np.arange(k * B, (k + 1) * B))
        assert_same_batches([batch], [gather(examples, rows)])


def test_each_epoch_holds_the_in_memory_epochs_examples(examples, shards):
    """The shuffles differ; the examples of every epoch do not: each once per epoch."""
    kwargs = dict(batch_size=B, seed=0, num_epochs=3, drop_remainder=False)
    from_shards = list(single(shards, **kwargs))
    in_memory = list(train_iterator(examples, shard_index=0, shard_count=1, **kwargs))
    per_epoch = -(-N // B)
    assert len(from_shards) == len(in_memory) == 3 * per_epoch
    for epoch in range(3):
        part = slice(epoch * per_epoch, (epoch + 1) * per_epoch)
        ours = np.concatenate([b["target"] for b in from_shards[part]])
        theirs = np.concatenate([b["target"] for b in in_memory[part]])
        assert sorted(ours) == sorted(theirs) == list(range(N))
        assert not np.array_equal(ours, theirs)
    first, second = (np.concatenate([b["target"] for b in from_shards[e * per_epoch:
                                                                       (e + 1) * per_epoch]])
                     for e in (0, 1))
    assert not np.array_equal(first, second)  # reshuffled every epoch


def test_same_order_same_loss_trajectory_as_the_in_memory_run(tmp_path):
    """Fed the shards' order, the in-memory pipeline gives the same batches and so the same
    training run, bit for bit: the examples in memory are laid out so that its epoch-0
    permutation visits them in the shards' order."""
    examples = model_examples()  # 80 rows of the tiny model's items
    n, seed = len(examples), 4
    shards = ShardedExamples(write_examples(tmp_path / "model", examples))
    memory_order = np.random.default_rng([seed, 0]).permutation(n)  # pipeline._epoch_order
    shard_rows = epoch_rows(n, seed, 0, np.arange(n))
    laid_out = {field: np.empty_like(getattr(examples, field))
                for field in ("history", "target", "user")}
    for field, array in laid_out.items():
        array[memory_order] = getattr(examples, field)[shard_rows]
    in_memory = train_iterator(Examples(**laid_out), batch_size=BATCH, seed=seed, shard_index=0,
                               shard_count=1)
    fresh_state, train_step = setup()
    steps = n // BATCH  # one epoch
    _, shard_losses = train(fresh_state(), train_step,
                            single(shards, batch_size=BATCH, seed=seed), steps)
    _, memory_losses = train(fresh_state(), train_step, in_memory, steps)
    assert all(np.isfinite(shard_losses)) and len(set(shard_losses)) == steps
    assert shard_losses == memory_losses


@pytest.mark.parametrize("k", [0, 5, 12, 17])  # 12: exactly at the first epoch boundary
def test_resume_from_saved_state_continues_exactly(shards, k):
    reference = take(single(shards, batch_size=B, seed=1), k + 10)
    interrupted = single(shards, batch_size=B, seed=1)
    take(interrupted, k)
    resumed = single(shards, batch_size=B, seed=1)
    restore_iterator_state(resumed, iterator_state(interrupted))
    assert_same_batches(take(resumed, 10), reference[k:])


def test_orbax_checkpoint_manager_round_trip(shards, tmp_path):
    """The way training checkpoints it: grain.checkpoint.CheckpointSave/Restore in Orbax."""
    reference = take(single(shards, batch_size=B, seed=5), 9)
    interrupted = single(shards, batch_size=B, seed=5)
    take(interrupted, 4)
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as manager:
        manager.save(4, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointSave(interrupted)))
        manager.wait_until_finished()
    resumed = single(shards, batch_size=B, seed=5)
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as manager:
        manager.restore(4, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(resumed)))
    assert_same_batches(take(resumed, 5), reference[4:])


def test_state_of_another_source_or_seed_is_refused(examples, shards):
    in_memory = train_iterator(examples, batch_size=B, seed=1, shard_index=0, shard_count=1)
    take(in_memory, 2)
    with pytest.raises(ValueError, match="cannot restore"):
        restore_iterator_state(single(shards, batch_size=B, seed=1), iterator_state(in_memory))
    other_seed = single(shards, batch_size=B, seed=2)
    with pytest.raises(ValueError, match="cannot restore"):
        restore_iterator_state(other_seed, iterator_state(single(shards, batch_size=B, seed=1)))


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_shards_split_each_global_batch(shards, drop_remainder):
    kwargs = dict(batch_size=B, seed=7, num_epochs=2, drop_remainder=drop_remainder)
    whole = list(single(shards, **kwargs))
    parts = [list(shard_train_iterator(shards, shard_index=i, shard_count=2, **kwargs))
             for i in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole)
    for global_batch, part0, part1 in zip(whole, *parts, strict=True):
        assert not set(part0["target"].tolist()) & set(part1["target"].tolist())
        for key in global_batch:
            np.testing.assert_array_equal(np.concatenate([part0[key], part1[key]]),
                                          global_batch[key], err_msg=key)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(batch_size=6, shard_index=0, shard_count=4), "multiple of shard_count"),
    (dict(batch_size=N + 1, shard_index=0, shard_count=1), "no full batch"),
    (dict(batch_size=B, shard_index=0, shard_count=1, length_buckets=(2,)), "not supported"),
    (dict(batch_size=B, shard_index=0, shard_count=1, num_epochs=0), "num_epochs"),
])
def test_bad_settings_are_rejected(shards, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shard_train_iterator(shards, seed=0, **kwargs)


def test_a_corrupt_shard_stops_training_naming_the_file(examples, tmp_path):
    directory = write_examples(tmp_path / "bad", examples, per_shard=60)
    path = directory / "train-00000.array_record"
    corrupt(path)
    batches = single(ShardedExamples(directory), batch_size=B, seed=0, num_epochs=1)
    with pytest.raises(DataFormatError, match="cannot be read") as error:
        for _ in batches:  # through Grain's prefetch threads
            pass
    assert str(error.value).startswith(f"{path}:")


# -- two processes ------------------------------------------------------------------------------

STEPS = 15  # past the first epoch (12 batches)


def worker(process_id: int, port: int, directory: str) -> None:
    """One of two processes: saves the targets of its share of the first STEPS global batches."""
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=60)
    assert jax.process_count() == 2
    batches = take(shard_train_iterator(ShardedExamples(directory), batch_size=B, seed=9), STEPS)
    np.save(os.path.join(directory, f"targets_{process_id}.npy"),
            np.stack([b["target"] for b in batches]))
    jax.distributed.shutdown()


def test_two_processes_read_disjoint_halves_of_every_global_batch(examples, tmp_path):
    directory = write_examples(tmp_path / "two", examples)
    port = free_port()
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    processes = [subprocess.Popen(
        [sys.executable, "-c", f"from tests.data.test_shard_pipeline import worker; "
                               f"worker({i}, {port}, {str(directory)!r})"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=120) for p in processes]
    finally:
        for p in processes:
            p.kill()
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    halves = [np.load(directory / f"targets_{i}.npy") for i in range(2)]
    whole = take(single(ShardedExamples(directory), batch_size=B, seed=9), STEPS)
    for step, batch in enumerate(whole):
        first, second = halves[0][step], halves[1][step]
        assert len(first) == len(second) == B // 2
        assert not set(first.tolist()) & set(second.tolist())
        np.testing.assert_array_equal(np.concatenate([first, second]), batch["target"])
    assert len(set(itertools.chain.from_iterable(h[:12].ravel().tolist() for h in halves))) \
        == 12 * B  # the first epoch: 96 distinct examples over both processes
