"""train_rl with rl.best_metric on the reliability tests' tiny generator: the start policy is
validated, and a run paused by max_steps_per_run and resumed returns the same best step and
policy as an uninterrupted one, the policy of that step's checkpoint."""

import math

import jax
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.rewards.channel import REWARD_CHANNELS
from sgrec_jax.rl.evaluation import EVAL_BUSINESS
from sgrec_jax.rl.training import restore_policy, train_rl
from sgrec_jax.sid.catalog import build_catalog
from sgrec_jax.train.loop import Preempted
from tests.models.tiny import CODES, NUM_ITEMS, SIZES
from tests.reliability import runs


def run(run_dir, **overrides):
    # On this run ndcg@10 validates 0.021, 0.096, 0.103, 0.097, 0.097 at steps 0, 2, 4, 6, 8:
    # the best is neither the start nor the end.
    config = runs.rl_config(runs.mesh_config(1, 1), num_steps=8, eval_every=2,
                            best_metric="ndcg@10", **overrides)
    eval_channels = [runs.value_channel(EVAL_BUSINESS), REWARD_CHANNELS.get("hit")(None, {})]
    catalog = jax.device_put(build_catalog(CODES, SIZES))
    return train_rl(config, NUM_ITEMS, runs.generator(), catalog, runs.rl_channels(),
                    eval_channels, runs.examples(160, 0), runs.examples(32, 1), run_dir)


def params(model):
    return runs.host(nnx.state(model, nnx.Param))


def assert_equal_trees(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_best_on_validation_survives_pauses(tmp_path):
    reference, reference_summary = run(tmp_path / "a")
    valid = {r["step"]: r["valid/ndcg@10"] for r in runs.metric_records(tmp_path / "a")
             if "valid/ndcg@10" in r}
    assert sorted(valid) == [0, 2, 4, 6, 8]  # the start policy is a candidate
    best_step = reference_summary["rl/best_step"]
    assert 0 < best_step < 8  # what the comment in `run` says: a restore from the middle
    assert best_step == max(valid, key=lambda step: (valid[step], -step))
    assert reference_summary["rl/best_valid_metric"] == valid[best_step]
    assert reference_summary["rl/last_step"] == 8 and not reference_summary["rl/stopped_early"]

    for _ in range(2):  # paused at steps 3 and 6
        try:
            run(tmp_path / "b", max_steps_per_run=3)
        except Preempted:
            pass
        else:
            raise AssertionError("the run was not paused")
    resumed, summary = run(tmp_path / "b", max_steps_per_run=3)
    for name, value in reference_summary.items():
        assert value == summary[name] or (math.isnan(value) and math.isnan(summary[name])), name
    assert_equal_trees(params(resumed), params(reference))
    _, saved = runs.checkpointed_state("rl", tmp_path / "b", best_step)
    assert_equal_trees(params(resumed), saved.params)


@pytest.mark.parametrize("nll_learning_rate", [0.0, 1e-3])
def test_restore_policy_gives_the_policy_a_step_saved(tmp_path, nll_learning_rate):
    """restore_policy rebuilds the run's state structure (popo_light's EMA state included, and
    with rl.nll_learning_rate the anchor's own optimizer state) from the config and a fresh start
    policy, and returns exactly the saved policy; a step without a checkpoint is refused by
    name."""
    config = runs.rl_config(runs.mesh_config(1, 1), num_steps=4, eval_every=2)
    if nll_learning_rate:
        config.rl.update(nll_weight=1.0, nll_learning_rate=nll_learning_rate)
    catalog = jax.device_put(build_catalog(CODES, SIZES))
    eval_channels = [runs.value_channel(EVAL_BUSINESS), REWARD_CHANNELS.get("hit")(None, {})]
    final, _ = train_rl(config, NUM_ITEMS, runs.generator(), catalog, runs.rl_channels(),
                        eval_channels, runs.examples(160, 0), runs.examples(32, 1), tmp_path)
    restored = restore_policy(config, runs.generator(), tmp_path, 4)
    assert_equal_trees(params(restored), params(final))
    start = params(runs.generator())
    assert any(not np.array_equal(a, b) for a, b in zip(
        jax.tree.leaves(params(restored)), jax.tree.leaves(start), strict=True))
    with pytest.raises(ValueError, match=r"keeps no checkpoint of step 1 \(kept: "):
        restore_policy(config, runs.generator(), tmp_path, 1)
