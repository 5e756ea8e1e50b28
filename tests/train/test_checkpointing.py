"""Checkpoints: exact resume of state and data, fallback past a corrupt checkpoint, keep-latest and
keep-best, SIGTERM, restoring on a different number of devices, and all of it on GCS."""

import gc
import logging
import os
import pathlib
import signal

import jax
import numpy as np
import pytest

from sgrec_jax.data.pipeline import train_iterator
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.train.checkpointing import (
    UNRESTORABLE_SUFFIX,
    Checkpointer,
    CheckpointRestoreError,
)
from tests.fake_devices import run_on_fake_devices
from tests.train.test_train_state import (
    HISTORY,
    NUM_ITEMS,
    assert_trees_equal,
    host,
    setup,
)

BATCH = 8


def examples() -> Examples:
    """80 examples: 10 batches an epoch, each row's history a different window of items."""
    rows = np.arange(80, dtype=np.int32)
    history = (rows[:, None] + np.arange(HISTORY, dtype=np.int32)) % NUM_ITEMS
    history[rows % 3 == 0, 0] = PAD_ITEM
    return Examples(history=history, target=(rows * 7) % NUM_ITEMS, user=rows)


def iterator():
    return train_iterator(examples(), batch_size=BATCH, seed=3, shard_index=0, shard_count=1)


@pytest.fixture(scope="module")
def trainer():
    return setup()


def train(state, train_step, data, steps: int, on_step=None):
    """Runs `steps` steps; returns (state, losses). on_step(step, state) runs after each."""
    losses = []
    for _ in range(steps):
        state, metrics = train_step(state, next(data))
        losses.append(float(metrics["loss"]))
        if on_step is not None:
            on_step(int(state.step), state)
    return state, losses


def test_resume_continues_the_run_bitwise(trainer, tmp_path):
    fresh_state, train_step = trainer
    params_at = {}

    def record(step, state):
        params_at[step] = host(state.params)

    _, reference = train(fresh_state(), train_step, iterator(), 6, on_step=record)

    # The interrupted run saves every 2 steps, asynchronously, while the next step donates the
    # very buffers being saved; it stops after step 5, so the resume redoes step 5.
    data = iterator()
    with Checkpointer(tmp_path, save_interval_steps=2) as ckpt:
        _, first = train(
            fresh_state(), train_step, data, 5,
            on_step=lambda step, state: ckpt.save(step, state, data, metadata={"run": "a"}),
        )
        assert ckpt.all_steps() == [2, 4]
    assert first == reference[:5]

    resumed_data = iterator()
    with Checkpointer(tmp_path, save_interval_steps=2) as ckpt:
        state, metadata = ckpt.restore_or_init(fresh_state(), resumed_data)
    assert int(state.step) == 4
    assert metadata == {"run": "a", "saved_on": {"device_count": 1, "process_count": 1}}
    assert_trees_equal(state.params, params_at[4])
    state, rest = train(state, train_step, resumed_data, 2)
    assert rest == reference[4:]  # bitwise: same floats, same batches
    assert_trees_equal(state.params, params_at[6])


def test_no_checkpoint_starts_fresh(trainer, tmp_path):
    fresh_state, _ = trainer
    init = fresh_state()
    expected = host(init.params)
    with Checkpointer(tmp_path / "new") as ckpt:
        state, metadata = ckpt.restore_or_init(init, iterator())
    assert metadata is None and int(state.step) == 0
    assert_trees_equal(state.params, expected)


def corrupt(step_dir: pathlib.Path) -> None:
    """Truncates the largest array data file of a saved state."""
    files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
    biggest = max(files, key=lambda p: p.stat().st_size)
    with open(biggest, "r+b") as f:
        f.truncate(8)


# Orbax reads arrays concurrently; when one read fails, the failures of the others surface only
# when their asyncio tasks are garbage collected. Collect them here rather than in a later test.
unread_failures = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@unread_failures
def test_corrupt_latest_checkpoint_falls_back_to_the_previous(trainer, tmp_path, caplog):
    fresh_state, train_step = trainer
    data = iterator()
    with Checkpointer(tmp_path) as ckpt:
        train(fresh_state(), train_step, data, 3,
              on_step=lambda step, state: ckpt.save(step, state, data))
    corrupt(tmp_path / "3")

    resumed_data = iterator()
    with caplog.at_level(logging.WARNING), Checkpointer(tmp_path) as ckpt:
        state, _ = ckpt.restore_or_init(fresh_state(), resumed_data)
        assert int(state.step) == 2
        assert ckpt.all_steps() == [1, 2]
        assert (tmp_path / f"3{UNRESTORABLE_SUFFIX}").is_dir()  # set aside, not deleted
        # Training goes on and can save step 3 again.
        state, _ = train(state, train_step, resumed_data, 1,
                         on_step=lambda step, state: ckpt.save(step, state, resumed_data))
    assert any("checkpoint 3" in r.getMessage() and "falling back" in r.getMessage()
               for r in caplog.records)
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [1, 2, 3]
        assert int(ckpt.restore_or_init(fresh_state(), iterator())[0].step) == 3
    gc.collect()


@unread_failures
def test_no_restorable_checkpoint_is_an_error(trainer, tmp_path):
    fresh_state, _ = trainer
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, fresh_state())
    corrupt(tmp_path / "1")
    with Checkpointer(tmp_path) as ckpt, pytest.raises(CheckpointRestoreError, match=r"\[1\]"):
        ckpt.restore_or_init(fresh_state())
    assert (tmp_path / "1").is_dir()  # nothing is set aside when nothing restores
    gc.collect()


@unread_failures
def test_on_gcs_resume_keep_and_set_aside(trainer, fake_gcs):
    """Orbax's GCS path (tests/fake_gcs.py): steps written in place and committed by
    commit_success.txt, old ones deleted, a corrupt one set aside by a (copying) rename."""
    fresh_state, train_step = trainer
    directory = "gs://fake-bucket/run/checkpoints"
    prefix = "fake-bucket/run/checkpoints/"
    data = iterator()
    with Checkpointer(directory, keep=2) as ckpt:
        _, reference = train(fresh_state(), train_step, data, 3,
                             on_step=lambda step, state: ckpt.save(step, state, data))
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [2, 3]
    assert f"{prefix}3/commit_success.txt" in fake_gcs.keys()
    assert not fake_gcs.keys(f"{prefix}1/")
    biggest = max(fake_gcs.keys(f"{prefix}3/state/"), key=lambda k: len(fake_gcs.get(k)[0]))
    fake_gcs.put(biggest, fake_gcs.get(biggest)[0][:8])

    resumed_data = iterator()
    with Checkpointer(directory, keep=2) as ckpt:
        state, _ = ckpt.restore_or_init(fresh_state(), resumed_data)
        assert int(state.step) == 2 and ckpt.all_steps() == [2]
    assert fake_gcs.keys(f"{prefix}3{UNRESTORABLE_SUFFIX}/") and not fake_gcs.keys(f"{prefix}3/")
    _, rest = train(state, train_step, resumed_data, 1)
    assert rest == reference[2:]
    gc.collect()


def test_keeps_the_latest_and_the_best(trainer, tmp_path):
    fresh_state, _ = trainer
    state = fresh_state()
    scores = {1: 0.1, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.4}
    with Checkpointer(tmp_path, keep=2, best_metric="ndcg", keep_best=1) as ckpt:
        for step, score in scores.items():
            assert ckpt.save(step, state, metrics={"ndcg": score, "loss": 1.0})
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [2, 4, 5]
        assert ckpt.best_step() == 2
        with pytest.raises(ValueError, match="ndcg"):
            ckpt.save(6, state, metrics={"loss": 1.0})
    with Checkpointer(tmp_path / "min", keep=1, best_metric="loss", best_mode="min") as ckpt:
        for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]:
            ckpt.save(step, state, metrics={"loss": loss})
        ckpt.wait_until_finished()
        assert ckpt.all_steps() == [2, 3] and ckpt.best_step() == 2


def test_sigterm_forces_a_final_save_and_stop(trainer, tmp_path):
    fresh_state, _ = trainer
    state = fresh_state()
    before = signal.getsignal(signal.SIGTERM)
    with Checkpointer(tmp_path, save_interval_steps=100) as ckpt:
        ckpt.install_sigterm_handler()
        assert ckpt.save(100, state)
        assert not ckpt.save(101, state)  # not a save step
        assert not ckpt.should_stop(101)
        os.kill(os.getpid(), signal.SIGTERM)  # the process survives it
        assert ckpt.should_stop(102)
        assert ckpt.save(102, state)  # forced by the signal
        assert not ckpt.save(102, state)  # already saved
    assert signal.getsignal(signal.SIGTERM) is before
    with Checkpointer(tmp_path) as ckpt:
        assert ckpt.all_steps() == [100, 102]


def test_restore_on_a_different_number_of_devices(trainer, tmp_path):
    """1 device -> 8 devices (4 data x 2 fsdp) -> 1 device, data position included."""
    fresh_state, train_step = trainer
    data = iterator()
    state, _ = train(fresh_state(), train_step, data, 2)
    saved = host(state.params)
    np.savez(tmp_path / "one.npz", *jax.tree.leaves(saved))
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        ckpt.save(2, state, data)

    out = run_on_fake_devices(8, f"""
        import jax, numpy as np
        from sgrec_jax.core.sharding import host_to_global, make_mesh
        from sgrec_jax.train.checkpointing import Checkpointer
        from tests.train.test_checkpointing import iterator, train
        from tests.train.test_train_state import host, setup

        mesh = make_mesh(4, 2)
        fresh_state, train_step = setup(mesh)
        data = iterator()
        with Checkpointer("{tmp_path / 'ckpt'}") as ckpt:
            state, _ = ckpt.restore_or_init(fresh_state(), data)
            assert int(state.step) == 2
            kernel = state.params["hidden"]["kernel"][...]
            assert kernel.addressable_shards[0].data.shape == (64, 128), kernel.sharding
            saved = np.load("{tmp_path / 'one.npz'}")
            for i, leaf in enumerate(jax.tree.leaves(host(state.params))):
                np.testing.assert_array_equal(leaf, saved[f"arr_{{i}}"])
            global_data = map(lambda batch: host_to_global(batch, mesh), data)
            state, losses = train(state, train_step, global_data, 1)
            ckpt.save(3, state, data)
        np.savez("{tmp_path / 'eight.npz'}", *jax.tree.leaves(host(state.params)))
        print("loss", losses[0])
    """)
    eight_loss = float(out.split("loss")[-1])

    state, reference = train(state, train_step, data, 1)  # the same step on one device
    assert eight_loss == pytest.approx(reference[0], rel=1e-5)

    resumed_data = iterator()
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        restored, metadata = ckpt.restore_or_init(fresh_state(), resumed_data)
    assert int(restored.step) == 3 and metadata["saved_on"]["device_count"] == 8
    eight = np.load(tmp_path / "eight.npz")
    for i, leaf in enumerate(jax.tree.leaves(host(restored.params))):
        np.testing.assert_array_equal(leaf, eight[f"arr_{i}"])
    np.testing.assert_array_equal(next(resumed_data)["target"], next(data)["target"])
