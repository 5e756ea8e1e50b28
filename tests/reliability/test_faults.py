"""Faults while saving: kill -9 mid-write and a full disk lose nothing already saved.

(A corrupt latest checkpoint, non-finite losses and config typos are covered by
tests/train/test_checkpointing.py, tests/train/test_train_state.py and
tests/experiments/test_train.py.)

The full disk is real at the system-call level without root: the run's process gets an
RLIMIT_FSIZE below the size of a checkpoint's array file (and SIGXFSZ ignored), so the kernel
fails TensorStore's write with EFBIG, the errno path a full disk takes with ENOSPC; Python-level
mocks could not reach TensorStore's C++ writes.
"""

import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from sgrec_jax.train.checkpointing import Checkpointer
from tests.reliability import runs

BALLAST = 2**22  # float32s (16 MiB): a save takes long enough to be killed in the middle


def test_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, signal
            import numpy as np
            from sgrec_jax.train.checkpointing import Checkpointer
            from tests.reliability import runs

            ballast = np.arange({BALLAST}, dtype=np.float32)
            state = runs.fresh_sft_state(runs.mesh_config(1, 1), extra={{"ballast": ballast}})
            ckpt = Checkpointer("{directory}")
            ckpt.save(1, state.replace(step=state.step + 1))
            ckpt.wait_until_finished()
            ckpt.save(2, state.replace(step=state.step + 2, extra={{"ballast": ballast + 1}}))
            os.kill(os.getpid(), signal.SIGKILL)  # while the asynchronous save writes
        """)],
        cwd=runs.REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
        stderr=subprocess.PIPE, text=True,
    )
    code, err = runs.finish(child)
    assert code == -signal.SIGKILL, err[-3000:]
    leftovers = [p.name for p in directory.iterdir() if p.name.startswith("2.")]
    assert leftovers and "tmp" in leftovers[0], sorted(p.name for p in directory.iterdir())

    ballast = np.arange(BALLAST, dtype=np.float32)
    fresh = runs.fresh_sft_state(runs.mesh_config(1, 1), extra={"ballast": 0 * ballast})
    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [1]
        state, _ = ckpt.restore_or_init(fresh)
        assert int(state.step) == 1
        np.testing.assert_array_equal(np.asarray(state.extra["ballast"]), ballast)
        assert ckpt.save(2, state)  # step 2 can be saved again
    with Checkpointer(directory) as ckpt:
        assert ckpt.all_steps() == [1, 2]


@pytest.mark.parametrize("trainer", sorted(runs.TRAINERS))
def test_full_disk_fails_loudly_and_keeps_what_was_saved(tmp_path, trainer):
    code, err = runs.finish(runs.start(tmp_path, "--max_steps_per_run=8", trainer=trainer))
    assert code == 143, err[-3000:]  # paused after saving step 8
    step, before = runs.checkpointed_state(trainer, tmp_path)
    assert step == 8

    # The next save (step 12) needs files of several hundred KB; logs stay far below the limit.
    code, err = runs.finish(runs.start(tmp_path, "--max_file_bytes=200000", trainer=trainer))
    assert code not in (0, 143), err[-3000:]
    assert "File too large" in err, err[-3000:]

    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert max(ckpt.all_steps()) == 8
    step, after = runs.checkpointed_state(trainer, tmp_path)
    assert step == 8
    jax.tree.map(np.testing.assert_array_equal, after, before)
