"""The popularity and item_transition stages in a tiny pipeline without SIDs, and their checks."""

import re

import numpy as np
import pytest

from sgrec_jax.data.split import leave_one_out, training_sequences
from sgrec_jax.models.counting import ItemTransition
from sgrec_jax.stages.baselines import item_transition_weights
from sgrec_jax.stages.pipeline import check_config, load_configured_dataset, run_pipeline
from tests.stages.test_sft import tiny_config


def baseline_config(**item_transition):
    config = tiny_config()
    config.stages = ("popularity", "item_transition")
    config.baselines.item_transition.update(item_transition)
    return config


def test_both_floors_report_metrics_diagnostics_and_save_rankings(tmp_path):
    config = baseline_config(window=2, weights=(1.0, 0.5))
    results = run_pipeline(config, str(tmp_path))
    for name in ("popularity", "item_transition"):
        assert results[f"{name}/num_users"] == 60 and results[f"{name}/valid_rate"] == 1.0
        for metric in ("recall@10", "ndcg@10", "coverage@10", "diag/follows_share",
                       "diag/recall@10|pop_q5", "diag/history_share@10"):
            assert 0.0 <= results[f"{name}/{metric}"] <= 1.0, (name, metric)
        assert f"{name}/diag/first_codes@10" not in results  # no "sids" stage ran
    # The same list for everyone: 10 of the 150 items.
    assert results["popularity/coverage@10"] == pytest.approx(10 / 150)

    dataset = load_configured_dataset(config)
    test = leave_one_out(dataset, config.data.max_history).test
    saved = np.load(tmp_path / "item_transition" / "test_rankings.npz")
    expected, _ = ItemTransition.fit(training_sequences(dataset), dataset.num_items,
                                     weights=(1.0, 0.5)).rank(test.history, 10)
    np.testing.assert_array_equal(saved["items_uk"], expected)
    np.testing.assert_array_equal(saved["targets_u"], test.target)
    popular = np.load(tmp_path / "popularity" / "test_rankings.npz")["items_uk"]
    assert (popular == popular[0]).all() and len(set(popular[0])) == 10


@pytest.mark.parametrize(
    "options, message",
    [
        ({"window": 2}, "baselines.item_transition.weights must give one weight per window "
                        "item (2), got 3"),
        ({"window": 0, "weights": ()}, "baselines.item_transition.window must be an integer >= 1"),
        ({"weights": (1.0, -1.0, 0.0)}, "baselines.item_transition.weights must be finite"),
    ],
)
def test_bad_options_fail_the_config_check_naming_the_field(options, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        check_config(baseline_config(**options))


def test_other_readers_get_the_weights_as_the_stage_checks_them():
    """experiments.fusion counts transitions with a run's own weights, checked the same way."""
    assert item_transition_weights(baseline_config(window=2, weights=(1, 0.5))) == (1.0, 0.5)
    config = baseline_config()
    del config.baselines["item_transition"]  # a run from before the section
    assert item_transition_weights(config) == (1.0, 0.5, 0.25)
    with pytest.raises(ValueError, match="baselines.item_transition.weights must be finite"):
        item_transition_weights(baseline_config(weights=(1.0, -1.0, 0.5)))


def test_unknown_option_lists_the_valid_ones():
    config = baseline_config()
    config.baselines.unlock()
    config.baselines.popularity.window = 3
    with pytest.raises(ValueError, match=r"unknown option\(s\) window for pipeline stage "
                       r"'popularity'; valid options: exclude_history$"):
        check_config(config)


def test_the_recorded_commit_is_the_one_the_stages_ran_with(tmp_path, monkeypatch):
    """A long run's provenance names the code it trained with, not a checkout that moved on
    while it ran (the commit is read before the first stage)."""
    from sgrec_jax.core import provenance
    from sgrec_jax.stages import baselines, pipeline

    head = {"commit": "commit-at-start"}
    monkeypatch.setattr(provenance, "git_commit", lambda directory=None: head["commit"])
    run_baseline = baselines._run_baseline

    def run_then_move_head(*args, **kwargs):
        run_baseline(*args, **kwargs)
        head["commit"] = "commit-checked-out-later"

    monkeypatch.setattr(baselines, "_run_baseline", run_then_move_head)
    results = pipeline.run_pipeline(baseline_config(), str(tmp_path))
    assert head["commit"] == "commit-checked-out-later"
    assert results["provenance"]["git_commit"] == "commit-at-start"
