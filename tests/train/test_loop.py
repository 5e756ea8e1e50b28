"""The loop skeleton: a paused run resumes onto the uninterrupted trajectory with its metrics
written once, the best validation state comes back after an early stop (the start state among
the candidates with validate_start, the latest of tied ones, across pauses too), and an in-memory
run touches no disk."""

import dataclasses
import json

import numpy as np
import pytest

from sgrec_jax.train.loop import LoopSettings, Preempted, run_loop
from tests.train.test_checkpointing import iterator
from tests.train.test_train_state import assert_trees_equal, host, setup


@pytest.fixture(scope="module")
def trainer():
    return setup()


def records(run_dir, prefix):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if any(k.startswith(prefix) for k in r)]


def test_a_paused_run_resumes_onto_the_uninterrupted_trajectory(trainer, tmp_path):
    fresh_state, train_step = trainer
    settings = LoopSettings(num_steps=6, log_every=1, eval_every=2, keep_checkpoints=2)

    def validate(state):
        return {"step": float(state.step), "per_user": np.zeros(3)}  # per_user: not a scalar

    def run(run_dir, **overrides):
        return run_loop(state=fresh_state(), step_fn=train_step, data=iterator(),
                        validate=validate, run_dir=run_dir,
                        settings=dataclasses.replace(settings, **overrides))

    reference = run(tmp_path / "a")
    with pytest.raises(Preempted, match="paused: saved step 4"):
        run(tmp_path / "b", max_steps_per_run=4)
    resumed = run(tmp_path / "b", max_steps_per_run=4)
    assert resumed.last_step == reference.last_step == 6
    assert_trees_equal(host(resumed.state.params), host(reference.state.params))
    assert [r["step"] for r in records(tmp_path / "b", "train/")] == [1, 2, 3, 4, 5, 6]
    assert [r["valid/step"] for r in records(tmp_path / "b", "valid/")] == [2.0, 4.0, 6.0]
    assert not any("valid/per_user" in r for r in records(tmp_path / "b", "valid/"))
    assert resumed.train_seconds > 0


def test_an_early_stop_returns_the_best_validation_state(trainer, tmp_path):
    fresh_state, train_step = trainer
    metric_at = {2: 1.0, 4: 3.0, 6: 2.0, 8: 1.0}
    outcome = run_loop(
        state=fresh_state(), step_fn=train_step, data=iterator(), run_dir=tmp_path,
        validate=lambda state: {"m": metric_at[int(state.step)]},
        settings=LoopSettings(num_steps=12, log_every=4, eval_every=2, keep_checkpoints=1,
                              best_metric="m", patience=2),
    )
    assert outcome.stopped_early and outcome.last_step == 8
    assert (outcome.best_step, outcome.best_metric) == (4, 3.0)
    assert int(outcome.state.step) == 4  # restored from the best checkpoint


def test_the_start_state_is_a_candidate_with_validate_start(trainer, tmp_path):
    fresh_state, train_step = trainer
    metric_at = {0: 5.0, 2: 1.0, 4: 2.0}
    outcome = run_loop(
        state=fresh_state(), step_fn=train_step, data=iterator(), run_dir=tmp_path,
        validate=lambda state: {"m": metric_at[int(state.step)]},
        settings=LoopSettings(num_steps=4, log_every=1, eval_every=2, best_metric="m",
                              validate_start=True),
    )
    assert (outcome.last_step, outcome.best_step, outcome.best_metric) == (4, 0, 5.0)
    assert int(outcome.state.step) == 0  # restored: no step beat the start
    assert_trees_equal(host(outcome.state.params), host(fresh_state().params))
    assert [r["step"] for r in records(tmp_path, "valid/")] == [0, 2, 4]


def test_a_tie_moves_the_best_to_the_later_step_without_resetting_patience(trainer, tmp_path):
    """The checkpointer keeps the latest of equal checkpoints; the loop restores that one."""
    fresh_state, train_step = trainer
    metric_at = {0: 2.0, 2: 2.0, 4: 1.0, 6: 1.0}
    outcome = run_loop(
        state=fresh_state(), step_fn=train_step, data=iterator(), run_dir=tmp_path,
        validate=lambda state: {"m": metric_at[int(state.step)]},
        settings=LoopSettings(num_steps=6, log_every=1, eval_every=2, keep_checkpoints=1,
                              best_metric="m", patience=2, validate_start=True),
    )
    assert outcome.stopped_early and outcome.last_step == 4
    assert (outcome.best_step, outcome.best_metric, int(outcome.state.step)) == (2, 2.0, 2)


def test_best_on_validation_after_pauses_is_the_uninterrupted_runs(trainer, tmp_path):
    """Stopped by max_steps_per_run (between validations and right after one) and resumed, the
    run picks the same best step and state, validates each step once, the start only once."""
    fresh_state, train_step = trainer
    metric_at = {0: 1.0, 2: 2.0, 4: 4.0, 6: 3.0, 8: 1.0}
    validated = []

    def validate(state):
        validated.append(int(state.step))
        return {"m": metric_at[int(state.step)]}

    def run(run_dir, **overrides):
        return run_loop(state=fresh_state(), step_fn=train_step, data=iterator(),
                        validate=validate, run_dir=run_dir,
                        settings=LoopSettings(num_steps=8, log_every=1, eval_every=2,
                                              keep_checkpoints=1, best_metric="m",
                                              validate_start=True, **overrides))

    reference = run(tmp_path / "a")
    assert (reference.best_step, int(reference.state.step)) == (4, 4)
    validated.clear()
    for _ in range(2):  # pauses at steps 3 and 6
        with pytest.raises(Preempted, match="paused"):
            run(tmp_path / "b", max_steps_per_run=3)
    resumed = run(tmp_path / "b", max_steps_per_run=3)
    assert validated == [0, 2, 4, 6, 8]
    assert (resumed.best_step, resumed.best_metric, resumed.last_step) == (4, 4.0, 8)
    assert int(resumed.state.step) == 4
    assert_trees_equal(host(resumed.state.params), host(reference.state.params))
    assert [r["step"] for r in records(tmp_path / "b", "valid/")] == [0, 2, 4, 6, 8]


def test_an_unknown_best_metric_is_named(trainer, tmp_path):
    fresh_state, train_step = trainer
    with pytest.raises(ValueError, match="best_metric 'ndcg@10' is not among the validation "
                                         r"metrics \['m'\]"):
        run_loop(state=fresh_state(), step_fn=train_step, data=iterator(), run_dir=tmp_path,
                 validate=lambda state: {"m": 1.0},
                 settings=LoopSettings(num_steps=4, log_every=1, eval_every=2,
                                       best_metric="ndcg@10", validate_start=True))


def test_an_in_memory_run_touches_no_disk(trainer, tmp_path, monkeypatch):
    fresh_state, train_step = trainer
    monkeypatch.chdir(tmp_path)
    validated = []
    outcome = run_loop(
        state=fresh_state(), step_fn=train_step, data=iterator(),
        validate=lambda state: validated.append(int(state.step)) or {},
        settings=LoopSettings(num_steps=5, log_every=2, eval_every=2),
    )
    assert outcome.last_step == int(outcome.state.step) == 5
    assert validated == [2, 4, 5]
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="need a run_dir"):
        run_loop(state=fresh_state(), step_fn=train_step, data=iterator(),
                 settings=LoopSettings(num_steps=5, log_every=2, best_metric="m"))
