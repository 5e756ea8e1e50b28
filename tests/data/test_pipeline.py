"""The Grain input pipeline: determinism, epochs, resume, sharding, eval padding, throughput."""

import itertools
import time

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from sgrec_jax.data.pipeline import (
    eval_batches,
    iterator_state,
    restore_iterator_state,
    train_iterator,
)
from sgrec_jax.data.split import PAD_ITEM, Examples

N, H, B = 103, 4, 8  # 103 = 12 full batches of 8 plus 7 left over.


def make_examples(n: int = N, h: int = H) -> Examples:
    """Examples whose target is their row number, with every row's contents distinct."""
    rows = np.arange(n, dtype=np.int32)
    history = (rows[:, None] * 10 + np.arange(h, dtype=np.int32)).astype(np.int32)
    history[np.arange(h)[None, :] < (rows % h)[:, None]] = PAD_ITEM  # row i has i % h pads
    return Examples(history=history, target=rows, user=rows // 3)


@pytest.fixture(scope="module")
def examples() -> Examples:
    return make_examples()


def take(iterator, k: int) -> list[dict[str, np.ndarray]]:
    return list(itertools.islice(iterator, k))


def targets(batches) -> list[np.ndarray]:
    return [b["target"] for b in batches]


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def single(examples, **kwargs):
    return train_iterator(examples, shard_index=0, shard_count=1, **kwargs)


def test_batches_gather_whole_rows(examples):
    batch = next(single(examples, batch_size=B, seed=0))
    assert batch.keys() == {"history", "history_mask", "target", "user"}
    assert batch["history"].shape == (B, H) and batch["history"].dtype == np.int32
    assert batch["history_mask"].dtype == np.bool_
    assert batch["target"].shape == batch["user"].shape == (B,)
    rows = batch["target"]
    np.testing.assert_array_equal(batch["history"], examples.history[rows])
    np.testing.assert_array_equal(batch["history_mask"], examples.history[rows] != PAD_ITEM)
    np.testing.assert_array_equal(batch["user"], examples.user[rows])
    assert not batch["history_mask"].all()  # the fixture's pads reached the mask


def test_same_seed_same_batches_other_seed_other_batches(examples):
    first = take(single(examples, batch_size=B, seed=3), 30)  # 2.5 epochs
    again = take(single(examples, batch_size=B, seed=3), 30)
    other = take(single(examples, batch_size=B, seed=4), 30)
    assert_same_batches(first, again)
    assert not all(np.array_equal(a, b) for a, b in zip(targets(first), targets(other)))


def test_every_epoch_is_a_new_permutation(examples):
    batches = list(single(examples, batch_size=B, seed=0, num_epochs=3, drop_remainder=False))
    per_epoch = -(-N // B)
    assert len(batches) == 3 * per_epoch  # stops after num_epochs
    assert [len(t) for t in targets(batches[:per_epoch])] == [B] * (N // B) + [N % B]
    orders = [
        np.concatenate(targets(batches[e * per_epoch : (e + 1) * per_epoch])) for e in range(3)
    ]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(N))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(N))


def test_drop_remainder_drops_a_different_tail_each_epoch(examples):
    batches = list(single(examples, batch_size=B, seed=0, num_epochs=2))
    per_epoch = N // B
    assert len(batches) == 2 * per_epoch
    assert all(len(t) == B for t in targets(batches))
    seen = [np.concatenate(targets(batches[e * per_epoch : (e + 1) * per_epoch])) for e in (0, 1)]
    for order in seen:
        assert len(np.unique(order)) == per_epoch * B
    dropped = [set(range(N)) - set(order.tolist()) for order in seen]
    assert all(len(d) == N % B for d in dropped)
    assert dropped[0] != dropped[1]


@pytest.mark.parametrize("k", [0, 5, 12, 17])  # 12: exactly at the first epoch boundary
def test_resume_from_saved_state_continues_exactly(examples, k):
    reference = take(single(examples, batch_size=B, seed=1), k + 10)
    interrupted = single(examples, batch_size=B, seed=1)
    take(interrupted, k)
    state = iterator_state(interrupted)
    assert isinstance(state, bytes)
    resumed = single(examples, batch_size=B, seed=1)
    restore_iterator_state(resumed, state)
    assert_same_batches(take(resumed, 10), reference[k:])


def test_state_from_another_pipeline_is_refused(examples):
    saved = single(examples, batch_size=B, seed=1)
    take(saved, 3)
    other = single(examples, batch_size=B, seed=2)
    with pytest.raises(ValueError, match="cannot restore"):
        restore_iterator_state(other, iterator_state(saved))


def test_orbax_checkpoint_manager_round_trip(examples, tmp_path):
    """The way training checkpoints it: grain.checkpoint.CheckpointSave/Restore in Orbax."""
    reference = take(single(examples, batch_size=B, seed=5), 9)
    interrupted = single(examples, batch_size=B, seed=5)
    take(interrupted, 4)
    save = ocp.args.Composite(data=grain.checkpoint.CheckpointSave(interrupted))
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as manager:
        manager.save(4, args=save)
        manager.wait_until_finished()
    resumed = single(examples, batch_size=B, seed=5)
    restore = ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(resumed))
    with ocp.CheckpointManager(tmp_path, item_names=("data",)) as manager:
        manager.restore(4, args=restore)
    assert_same_batches(take(resumed, 5), reference[4:])


@pytest.mark.parametrize("drop_remainder", [True, False])
def test_two_shards_split_each_global_batch(examples, drop_remainder):
    kwargs = dict(batch_size=B, seed=7, num_epochs=2, drop_remainder=drop_remainder)
    whole = list(train_iterator(examples, shard_index=0, shard_count=1, **kwargs))
    shards = [
        list(train_iterator(examples, shard_index=i, shard_count=2, **kwargs)) for i in (0, 1)
    ]
    assert len(shards[0]) == len(shards[1]) == len(whole)
    for global_batch, part0, part1 in zip(whole, *shards, strict=True):
        if len(global_batch["target"]) == B:
            assert len(part0["target"]) == len(part1["target"]) == B // 2
        assert not set(part0["target"].tolist()) & set(part1["target"].tolist())
        for key in global_batch:
            np.testing.assert_array_equal(
                np.concatenate([part0[key], part1[key]]), global_batch[key], err_msg=key
            )


def test_shard_defaults_come_from_jax_processes(examples):
    batch = next(train_iterator(examples, batch_size=B, seed=0))  # one process on this machine
    assert len(batch["target"]) == B


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(batch_size=6, shard_index=0, shard_count=4), "multiple of shard_count"),
        (dict(batch_size=B, shard_index=0), "both shard_index and shard_count"),
        (dict(batch_size=B, shard_index=2, shard_count=2), "shard_index < shard_count"),
        (dict(batch_size=N + 1, shard_index=0, shard_count=1), "no full batch"),
        (dict(batch_size=B, shard_index=0, shard_count=1, num_epochs=0), "num_epochs"),
    ],
)
def test_bad_settings_are_rejected(examples, kwargs, message):
    with pytest.raises(ValueError, match=message):
        train_iterator(examples, seed=0, **kwargs)


@pytest.mark.parametrize("n", [N, 96])  # with and without a partial last batch
def test_eval_batches_cover_everything_once_in_order(n):
    examples = make_examples(n)
    batches = eval_batches(examples, batch_size=B)
    assert len(batches) == -(-n // B)
    collected = list(batches)
    for batch in collected:
        assert batch["history"].shape == (B, H) and batch["valid"].shape == (B,)
        np.testing.assert_array_equal(batch["history"], examples.history[batch["target"]])
        np.testing.assert_array_equal(batch["history_mask"], batch["history"] != PAD_ITEM)
    valid = np.concatenate([b["valid"] for b in collected])
    assert valid.sum() == n and valid[:n].all()  # only trailing padding
    np.testing.assert_array_equal(np.concatenate(targets(collected))[valid], np.arange(n))
    last = collected[-1]
    assert last["history_mask"].any(axis=1).all()  # padding rows are real rows, never all-pad


def test_throughput_on_a_beauty_sized_split():
    """131,413 examples x 20 as in Beauty; prints examples/s (the figure is not asserted)."""
    examples = make_examples(131_413, 20)
    batch_size = 256
    start = time.perf_counter()
    batches = list(single(examples, batch_size=batch_size, seed=0, num_epochs=1))
    seconds = time.perf_counter() - start
    epoch = np.concatenate(targets(batches))
    assert len(np.unique(epoch)) == len(epoch) == len(examples) // batch_size * batch_size
    print(f"\ntrain_iterator: {len(epoch) / seconds:,.0f} examples/s (batch {batch_size})")


# Length buckets: make_examples gives row i a history of H - i % H items (4, 3, 2, 1).
BUCKETS = (2, 3)  # closed by H = 4: widths 2, 3, 4


def test_length_buckets_batch_one_bucket_at_its_width(examples):
    lengths = examples.history_mask.sum(1)
    seen = []
    for batch in take(single(examples, batch_size=B, seed=0, length_buckets=BUCKETS), 12):
        width = batch["history"].shape[1]
        assert width in (2, 3, 4)
        rows = batch["target"]  # target = row number
        # Every row's real items survive the cut, and they sit in the narrowest fitting width.
        np.testing.assert_array_equal(batch["history_mask"].sum(1), lengths[rows])
        np.testing.assert_array_equal(batch["history"], examples.history[rows][:, H - width:])
        narrowest = np.searchsorted((2, 3, 4), lengths[rows])
        assert set(narrowest) == {(2, 3, 4).index(width)}
        seen.append(rows)
    seen = np.concatenate(seen)
    assert len(np.unique(seen)) == len(seen)  # one epoch, no example twice


def test_length_buckets_cover_each_bucket_but_its_partial_batch(examples):
    bucket_sizes = np.bincount(np.searchsorted((2, 3, 4), examples.history_mask.sum(1)))
    full = int(sum(s // B for s in bucket_sizes))
    epoch = take(single(examples, batch_size=B, seed=3, length_buckets=BUCKETS, num_epochs=1),
                 100)
    assert len(epoch) == full
    assert sum(len(b["target"]) for b in epoch) == full * B
    # Without drop_remainder every example comes exactly once.
    all_rows = take(single(examples, batch_size=B, seed=3, length_buckets=BUCKETS, num_epochs=1,
                           drop_remainder=False), 100)
    np.testing.assert_array_equal(np.sort(np.concatenate(targets(all_rows))), np.arange(N))


def test_length_buckets_are_seeded_resumable_and_sharded(examples):
    first = take(single(examples, batch_size=B, seed=5, length_buckets=BUCKETS), 30)
    again = take(single(examples, batch_size=B, seed=5, length_buckets=BUCKETS), 30)
    assert_same_batches(first, again)
    other = take(single(examples, batch_size=B, seed=6, length_buckets=BUCKETS), 30)
    assert any(not np.array_equal(a, b) for a, b in zip(targets(first), targets(other)))
    it = single(examples, batch_size=B, seed=5, length_buckets=BUCKETS)
    take(it, 17)
    state = iterator_state(it)
    resumed = single(examples, batch_size=B, seed=5, length_buckets=BUCKETS)
    restore_iterator_state(resumed, state)
    assert_same_batches(take(resumed, 13), first[17:])
    plain = single(examples, batch_size=B, seed=5)
    with pytest.raises(ValueError, match="cannot restore"):
        restore_iterator_state(plain, state)
    halves = [take(train_iterator(examples, batch_size=B, seed=5, length_buckets=BUCKETS,
                                  shard_index=i, shard_count=2), 30) for i in range(2)]
    for whole, a, b in zip(first, *halves, strict=True):
        assert a["history"].shape[1] == b["history"].shape[1] == whole["history"].shape[1]
        np.testing.assert_array_equal(np.concatenate([a["target"], b["target"]]),
                                      whole["target"])


@pytest.mark.parametrize(
    "buckets, message",
    [((3, 2), "ascending"), ((0, 2), "ascending"), ((2, 9), "exceed the history width")],
)
def test_bad_length_buckets_are_rejected(examples, buckets, message):
    with pytest.raises(ValueError, match=message):
        single(examples, batch_size=B, seed=0, length_buckets=buckets)
