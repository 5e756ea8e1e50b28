"""Multi-host: two CPU processes of two devices each train and checkpoint like one process.

Each process reads its half of every global batch from the Grain pipeline, `host_to_global`
assembles the global batch, and both write their shards of one checkpoint, which a single
process then restores.
"""

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.experimental import multihost_utils

from sgrec_jax.core.distributed import xla_flags_with_host_devices
from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.pipeline import train_iterator
from sgrec_jax.train.checkpointing import Checkpointer
from tests.train.test_checkpointing import BATCH, examples, train
from tests.train.test_train_state import host, setup

REPO = pathlib.Path(__file__).resolve().parents[2]
STEPS = 2


def global_batches(mesh):
    """This process's share of each batch (the pipeline's default shard), made global."""
    for local in train_iterator(examples(), batch_size=BATCH, seed=3):
        yield host_to_global(local, mesh)


def worker(process_id: int, port: int, directory: str) -> None:
    """One of the two processes: trains STEPS steps on a 2 (data) x 2 (fsdp) mesh, saves."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"localhost:{port}", num_processes=2, process_id=process_id, initialization_timeout=60
    )
    assert jax.process_count() == 2 and jax.device_count() == 4
    mesh = make_mesh(2, 2)
    fresh_state, train_step = setup(mesh)
    state, losses = train(fresh_state(), train_step, global_batches(mesh), STEPS)
    with Checkpointer(directory) as ckpt:
        ckpt.save(STEPS, state)
    params = host(multihost_utils.process_allgather(state.params, tiled=True))  # collective
    if process_id == 0:
        np.savez(os.path.join(directory, "params.npz"), *jax.tree.leaves(params))
        print("losses", *losses)
    jax.distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_and_their_checkpoint_restores_here(tmp_path):
    port = free_port()
    env = {**os.environ, "XLA_FLAGS": xla_flags_with_host_devices(2), "JAX_PLATFORMS": "cpu"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c",
             f"from tests.train.test_multiprocess import worker; "
             f"worker({i}, {port}, {str(tmp_path)!r})"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-4000:]
    two_process_losses = [float(x) for x in outputs[0][0].split("losses")[-1].split()]

    mesh = make_mesh()
    fresh_state, train_step = setup(mesh)
    _, one_process_losses = train(fresh_state(), train_step, global_batches(mesh), STEPS)
    np.testing.assert_allclose(two_process_losses, one_process_losses, rtol=1e-5)

    with Checkpointer(tmp_path) as ckpt:
        restored, metadata = ckpt.restore_or_init(fresh_state())
    assert int(restored.step) == STEPS
    assert metadata["saved_on"] == {"device_count": 4, "process_count": 2}
    saved = np.load(tmp_path / "params.npz")
    for i, leaf in enumerate(jax.tree.leaves(host(restored.params))):
        np.testing.assert_array_equal(leaf, saved[f"arr_{i}"])
