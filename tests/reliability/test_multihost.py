"""Multi-host for real on one machine: two processes joined by jax.distributed train like one.

Two CPU processes of two devices each (a 2 data x 2 fsdp mesh over 4 devices) run the SFT loop
(`tests.reliability.runs`): each reads its half of every global batch from the Grain pipeline,
`host_to_global` assembles the global batch, and both write their shards of each checkpoint.
Process 0 joins through the config (`distributed.enabled` and its fields), process 1 through the
environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID). The loss trajectory
and the final state match a one-device run in this process, and the 4-device, 2-process
checkpoint restores here on one device.
"""

import jax
import numpy as np
import pytest

from tests.reliability import runs

STEPS = 8


@pytest.mark.slow
@pytest.mark.parametrize("trainer", sorted(runs.TRAINERS))
def test_two_processes_train_like_one(tmp_path, trainer):
    port = runs.free_port()
    two = tmp_path / "two"
    common = [f"--num_steps={STEPS}", "--data=2", "--fsdp=2"]
    processes = [
        runs.start(two, *common, f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
                   "--process_id=0", devices=2, trainer=trainer),
        runs.start(two, *common, devices=2, trainer=trainer, env={
            "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": "1",
        }),
    ]
    one = tmp_path / "one"
    runs.TRAINERS[trainer](str(one), runs.mesh_config(1, 1), num_steps=STEPS)
    for i, process in enumerate(processes):
        code, err = runs.finish(process, timeout=420)
        assert code == 0, f"process {i}: {err[-3000:]}"
        assert f"process {i} of 2: 2 local of 4 devices" in err

    two_losses, one_losses = runs.train_losses(two), runs.train_losses(one)
    assert sorted(two_losses) == list(range(1, STEPS + 1))
    np.testing.assert_allclose([two_losses[s] for s in sorted(two_losses)],
                               [one_losses[s] for s in sorted(one_losses)], rtol=1e-5,
                               atol=1e-7)  # the RL loss at ratio 1 is ~0: float noise there
    two_step, two_state = runs.checkpointed_state(trainer, two)
    one_step, one_state = runs.checkpointed_state(trainer, one)
    assert two_step == one_step == STEPS
    assert runs.saved_on(two, STEPS) == {"device_count": 4, "process_count": 2}
    for name in ("params", "opt_state", "model_state"):
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6),
                     getattr(two_state, name), getattr(one_state, name))
    np.testing.assert_array_equal(two_state.rng, one_state.rng)
    assert int(two_state.step) == STEPS
