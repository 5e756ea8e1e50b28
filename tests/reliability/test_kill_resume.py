"""A run killed (SIGKILL), then preempted (SIGTERM), and resumed each time ends exactly where an
uninterrupted run ends: the same metrics.jsonl and the same final train state, bit for bit.

Every run is a separate process on one CPU device (`tests.reliability.runs`), so the kills are
real: SIGKILL may land mid-step or mid-checkpoint-write, and SIGTERM goes through the handler
that `train_supervised` installs and the exit code of `run_or_exit`.
"""

import json
import signal
import time

import jax
import numpy as np
import pytest

from tests.reliability import runs


def wait_for_step(process, run_dir, step: int, checkpoint: int, timeout: float = 300) -> int:
    """Blocks until the running `process` has logged a train step >= `step` and committed
    checkpoint `checkpoint` (Orbax renames its temporary directory last); returns the step."""
    deadline = time.monotonic() + timeout
    path = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited ({process.returncode}): {process.stderr.read()}"
        if path.exists() and (run_dir / "checkpoints" / str(checkpoint)).is_dir():
            lines = path.read_text().splitlines()
            steps = [json.loads(line)["step"] for line in lines[:-1]]  # the last may be partial
            if steps and max(steps) >= step:
                return max(steps)
        time.sleep(0.01)
    raise TimeoutError(f"no step {step} and checkpoint {checkpoint} in {run_dir} in {timeout}s")


@pytest.mark.parametrize("trainer", sorted(runs.TRAINERS))
def test_killed_and_preempted_run_resumes_bitwise(tmp_path, trainer):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    reference = runs.start(straight, trainer=trainer)

    killed = runs.start(interrupted, trainer=trainer)
    wait_for_step(killed, interrupted, 6, checkpoint=4)
    killed.send_signal(signal.SIGKILL)
    code, _ = runs.finish(killed)
    assert code == -signal.SIGKILL
    assert max(runs.train_losses(interrupted)) < runs.NUM_STEPS  # it really stopped mid-run

    preempted = runs.start(interrupted, trainer=trainer)
    at = wait_for_step(preempted, interrupted, 14, checkpoint=12)
    preempted.send_signal(signal.SIGTERM)
    code, err = runs.finish(preempted)
    assert code == 143, err[-3000:]
    saved = int(err.split("preempted: saved step ")[1].split()[0])
    assert at <= saved < runs.NUM_STEPS  # saved at the step boundary after the signal
    assert runs.checkpointed_state(trainer, interrupted)[0] == saved

    code, err = runs.finish(runs.start(interrupted, trainer=trainer))
    assert code == 0, err[-3000:]
    assert f"resumed at step {saved}" in err
    code, err = runs.finish(reference)
    assert code == 0, err[-3000:]

    # Steps redone after each interruption replace the lost ones: one record per step, and
    # every value (train and validation) is the uninterrupted run's, bit for bit.
    assert sorted(runs.train_losses(interrupted)) == list(range(1, runs.NUM_STEPS + 1))
    assert runs.metric_records(interrupted) == runs.metric_records(straight)
    step_a, state_a = runs.checkpointed_state(trainer, interrupted)
    step_b, state_b = runs.checkpointed_state(trainer, straight)
    assert step_a == step_b == runs.NUM_STEPS
    jax.tree.map(np.testing.assert_array_equal, state_a, state_b)
