"""Recommender: packing like the split, id checks, equality with beam search, the workdir loader."""

import numpy as np
import pytest

from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import PAD_ITEM, leave_one_out
from sgrec_jax.data.synthetic import load_synthetic
from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.serving.recommender import Recommender, pack_histories
from sgrec_jax.sid.build import save_semantic_ids, semantic_ids_from_codes
from sgrec_jax.stages.pipeline import load_configured_dataset, run_pipeline
from sgrec_jax.stages.sft import training_transition_counts
from tests.models.tiny import tiny_over
from tests.stages.test_sft import tiny_config

NUM_ITEMS, H = 40, 5
SIDS = semantic_ids_from_codes(np.random.default_rng(0).integers(0, 5, (NUM_ITEMS, 3)), (5, 5, 5))


@pytest.fixture(scope="module")
def model():
    return tiny_over(SIDS, H)


def test_pack_histories_packs_like_the_split():
    dataset = load_synthetic(None, num_items=60, num_users=20, max_seq_len=30, mean_seq_len=8)
    test = leave_one_out(dataset, max_history=H).test
    raw = [seq[:-1].tolist() for seq in dataset.sequences]  # the test histories, uncapped
    assert max(map(len, raw)) > H and min(map(len, raw)) < H  # both capping and padding happen

    history, mask = pack_histories(raw, max_history=H, num_items=60)
    np.testing.assert_array_equal(history, test.history)
    np.testing.assert_array_equal(mask, test.history_mask)
    assert history.dtype == np.int32
    # Arrays as the split stores them pass through; narrower ones are padded on the left.
    for array in (test.history, test.history[:, 2:]):
        again, again_mask = pack_histories(array, max_history=H, num_items=60)
        width = array.shape[1]
        np.testing.assert_array_equal(again[:, H - width:], array)
        np.testing.assert_array_equal(again[:, : H - width], PAD_ITEM)
        np.testing.assert_array_equal(again_mask, again != PAD_ITEM)


@pytest.mark.parametrize(
    "histories, message",
    [
        ([[1, 2], [3, 40]], "history row 1: item id 40 is outside 0..39"),
        ([[1, 2], [], [-1, 2]], "history row 2: item id -1 is outside"),
        ([[1], [2.5]], "history row 1: expected a flat list of integer item ids"),
        (np.array([[-1, 3, -1, 4]]), "history row 0: PAD_ITEM \\(-1\\) after a real item"),
        (np.array([[1, 2], [-1, 99]]), "history row 1: item id 99"),
        (np.array([[0.0, 1.0]]), "array histories must be integer"),
        # Ids are checked before capping to max_history: a malformed request is refused whole.
        ([[50, 1, 2, 3, 4, 5, 6]], "history row 0: item id 50"),
        (np.array([[1, 60, 1, 2, 3, 4, 5]]), "history row 0: item id 60"),
    ],
)
def test_bad_histories_name_the_row(histories, message):
    with pytest.raises(ValueError, match=message):
        pack_histories(histories, max_history=H, num_items=NUM_ITEMS)


def test_recommend_equals_constrained_beam_search(model):
    catalog = SIDS.catalog()
    recommender = Recommender(model, catalog, beam_size=6, max_batch_size=4)
    requests = [[1, 2, 3], [4], [], list(range(12)), [39, 0]]  # 5 rows: chunks of 4 and 1
    items, scores = recommender.recommend(requests, k=4)

    history, mask = pack_histories(requests, max_history=H, num_items=NUM_ITEMS)
    expected = constrained_beam_search_jit(
        model, catalog, history, mask, beam_size=6, num_return=4
    )
    assert items.shape == scores.shape == (5, 4)
    assert items.dtype == np.int32 and scores.dtype == np.float32
    np.testing.assert_array_equal(items, expected.items_bk)
    np.testing.assert_allclose(scores, expected.logprob_bk, rtol=1e-5, atol=1e-5)
    assert all(len(set(row)) == 4 for row in items.tolist())
    assert (np.diff(scores, axis=1) <= 0).all()
    # The same requests as an array (a subset of rows: bucket 4, already compiled) agree.
    again, _ = recommender.recommend(history[:4], k=4)
    np.testing.assert_array_equal(again, items[:4])
    with pytest.raises(ValueError, match="k must be in 1..beam_size=6"):
        recommender.recommend(requests, k=7)


def test_catalog_must_match_the_model(model):
    other = semantic_ids_from_codes(np.arange(30).reshape(10, 3) % 5, (5, 5, 5))
    with pytest.raises(ValueError, match="does not match the model"):
        Recommender(model, other.catalog(), beam_size=4)


@pytest.mark.parametrize("transition_memory", [0, 4], ids=["plain", "transition_memory"])
def test_from_workdir_reproduces_the_sft_test_rankings(tmp_path, monkeypatch, transition_memory):
    config = tiny_config()
    config.model.options.transition_memory = transition_memory
    results = run_pipeline(config, str(tmp_path / "run"))
    if not transition_memory:  # The best checkpoint is not the latest, so loading the latest
        assert results["sft/best_step"] != results["sft/last_step"]  # would not pass.
    monkeypatch.chdir(tmp_path)  # a relative work directory must work (Orbax needs absolute)
    recommender = Recommender.from_workdir("run")
    assert recommender.beam_size == config.eval.beam_size

    test = leave_one_out(load_configured_dataset(config), config.data.max_history).test
    items, scores = recommender.recommend(test.history, k=10)
    saved = np.load(tmp_path / "run" / "sft" / "test_rankings.npz")
    np.testing.assert_array_equal(items, saved["items_uk"])
    np.testing.assert_allclose(scores, saved["scores_uk"], rtol=1e-5, atol=1e-5)
    if transition_memory:  # the table came back from the checkpoint, not from a fresh model
        dataset = load_configured_dataset(config)
        expected, _ = training_transition_counts(dataset).top_successors(transition_memory)
        np.testing.assert_array_equal(recommender.model.transition_memory.successors[...],
                                      expected)


def test_from_workdir_without_a_run_fails_before_any_jax_work(tmp_path):
    with pytest.raises(DataFormatError, match="config.json: unreadable run config"):
        Recommender.from_workdir(tmp_path)
    (tmp_path / "config.json").write_text(tiny_config().to_json())
    save_semantic_ids(tmp_path, SIDS)
    with pytest.raises(FileNotFoundError, match="no SFT checkpoints in .*sft/checkpoints"):
        Recommender.from_workdir(tmp_path)
    assert not (tmp_path / "sft").exists()
