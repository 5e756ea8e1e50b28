"""data.rl_holdout "last_transition" through the sids -> sft -> rl pipeline on the tiny world,
with a copy-head generator reading a transition memory:
SFT never trains on a held-out example, every RL batch holds only held-out requests, the best
policy on validation is reported, and an RL run refuses an SFT work directory trained with
another holdout."""

import numpy as np
import pytest

import sgrec_jax.rl.training as rl_training
import sgrec_jax.stages.sft as sft_stage
from sgrec_jax.data.holdout import rl_requests, sft_examples
from sgrec_jax.data.split import leave_one_out, training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.rl.request_mix import mix_requests
from sgrec_jax.stages.pipeline import load_configured_dataset, run_pipeline
from tests.stages.test_rl import tiny_config

HOLDOUT = "last_transition"


def holdout_config(**rl):
    """The tiny RL config with the holdout and a copy-head generator reading a transition memory:
    the memory counts every training transition, the held-out ones included, and RL leaves each
    request's own transition out of it (rl/grpo.py), so the two go together."""
    config = tiny_config(**{"best_metric": "ndcg@10", **rl})
    config.data.rl_holdout = HOLDOUT
    config.model.options.update(transition_memory=3, transition_memory_window=2,
                                transition_memory_copy=True)
    return config


def rows(user, target, history) -> set[tuple]:
    return {(int(u), int(t), tuple(h)) for u, t, h in
            zip(np.asarray(user), np.asarray(target), np.asarray(history).tolist(), strict=True)}


def example_rows(examples) -> set[tuple]:
    return rows(examples.user, examples.target, examples.history)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(workdir, results, the SFT stage's training examples, the rows of each RL batch)."""
    workdir = tmp_path_factory.mktemp("rl_holdout")
    seen = {"sft": [], "rl": []}
    train_supervised, make_rl_step = sft_stage.train_supervised, rl_training.make_rl_step

    def recording_train_supervised(**kwargs):
        seen["sft"].append(kwargs["train"])
        return train_supervised(**kwargs)

    def recording_make_rl_step(**kwargs):
        step = make_rl_step(**kwargs)

        def recording_step(state, ref_params, channels, catalog, batch):
            seen["rl"].append(rows(batch["user"], batch["target"], batch["history"]))
            return step(state, ref_params, channels, catalog, batch)

        return recording_step

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sft_stage, "train_supervised", recording_train_supervised)
        patch.setattr(rl_training, "make_rl_step", recording_make_rl_step)
        results = run_pipeline(holdout_config(), str(workdir))
    return workdir, results, seen["sft"], seen["rl"]


def splits_of(config):
    return leave_one_out(load_configured_dataset(config), config.data.max_history)


def test_sft_never_trains_on_a_held_out_example(run):
    _, _, sft_trains, _ = run
    train = splits_of(holdout_config()).train
    held = example_rows(rl_requests(train, HOLDOUT))
    assert len(sft_trains) == 1
    seen = example_rows(sft_trains[0])
    assert held and not seen & held
    assert seen == example_rows(sft_examples(train, HOLDOUT))
    assert len(sft_trains[0]) == len(train) - len(held)


def test_rl_batches_hold_only_held_out_requests(run):
    _, results, _, rl_batches = run
    held = example_rows(rl_requests(splits_of(holdout_config()).train, HOLDOUT))
    assert len(rl_batches) == results["rl/last_step"] == 4
    assert all(batch and batch <= held for batch in rl_batches)


def test_the_best_policy_on_validation_is_reported(run):
    _, results, _, _ = run
    assert results["rl/best_step"] in (0, 2, 4)
    assert 0 <= results["rl/best_valid_metric"] <= 1
    assert results["rl/nonfinite_steps"] == 0 and results["rl/valid_rate"] == 1.0


def test_an_sft_workdir_trained_with_another_holdout_is_refused(run, tmp_path):
    workdir, _, _, _ = run
    config = holdout_config(init_workdir=str(workdir))
    config.stages = ("rl",)
    config.data.rl_holdout = "none"
    with pytest.raises(ValueError, match="config.data.rl_holdout 'none' differs from the "
                                         "'last_transition' the SFT run"):
        run_pipeline(config, str(tmp_path))



def test_rl_trains_only_on_the_requests_its_request_mix_keeps(run, tmp_path):
    """rl.request_mix "valid_follows" from the SFT work directory: every RL batch holds only the
    requests mix_requests keeps, fewer than the held-out ones (the tiny world's training
    transitions repeat more often than its validation targets follow their last item)."""
    workdir, _, _, _ = run
    config = holdout_config(init_workdir=str(workdir), request_mix="valid_follows")
    config.stages = ("rl",)
    dataset = load_configured_dataset(config)
    splits = leave_one_out(dataset, config.data.max_history)
    held = rl_requests(splits.train, HOLDOUT)
    stats = TrainingStatistics.from_sequences(training_sequences(dataset), dataset.num_items)
    mixed = mix_requests("valid_follows", held, splits.valid, stats)
    kept = example_rows(mixed.requests)
    assert mixed.follows_share_after < mixed.follows_share_before
    assert 0 < len(kept) < len(example_rows(held))
    batches = []
    make_rl_step = rl_training.make_rl_step

    def recording_make_rl_step(**kwargs):
        step = make_rl_step(**kwargs)

        def recording_step(state, ref_params, channels, catalog, batch):
            batches.append(rows(batch["user"], batch["target"], batch["history"]))
            return step(state, ref_params, channels, catalog, batch)

        return recording_step

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rl_training, "make_rl_step", recording_make_rl_step)
        results = run_pipeline(config, str(tmp_path))
    assert len(batches) == results["rl/last_step"] == 4
    assert all(batch and batch <= kept for batch in batches)
