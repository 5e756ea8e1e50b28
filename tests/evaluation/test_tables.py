import numpy as np
import pytest

from sgrec_jax.evaluation.tables import results_table, to_csv, to_markdown, write_table

RUNS = {
    "sasrec": [
        {"recall@10": 0.25, "ndcg@10": 0.125, "per_user": {"recall@10": np.ones(3)}},
        {"recall@10": 0.5, "ndcg@10": 0.25, "per_user": {"recall@10": np.ones(3)}},
        {"recall@10": 0.75, "ndcg@10": 0.375, "per_user": {"recall@10": np.ones(3)}},
    ],
    "tiger": [{"ndcg@10": 0.3, "recall@10": np.float32(0.5), "valid": True}],
}
MARKDOWN = """\
| system | seeds | recall@10 | ndcg@10 |
|---|---|---|---|
| sasrec | 3 | 0.500 ± 0.250 | 0.250 ± 0.125 |
| tiger | 1 | 0.500 | 0.300 |
"""
CSV = """\
system,num_seeds,recall@10_mean,recall@10_std,ndcg@10_mean,ndcg@10_std
sasrec,3,0.5,0.25,0.25,0.125
tiger,1,0.5,,0.3,
"""


def test_mean_and_sample_std_per_system():
    table = results_table(RUNS)
    assert table.systems == ("sasrec", "tiger") and table.metrics == ("recall@10", "ndcg@10")
    np.testing.assert_array_equal(table.mean_sm, [[0.5, 0.25], [0.5, 0.3]])
    np.testing.assert_array_equal(table.std_sm[0], [0.25, 0.125])  # ddof=1
    assert np.isnan(table.std_sm[1]).all()
    np.testing.assert_array_equal(table.num_seeds_s, [3, 1])


def test_exact_markdown_and_csv_files(tmp_path):
    table = results_table(RUNS)
    assert to_markdown(table, digits=3) == MARKDOWN
    assert to_csv(table) == CSV
    write_table(table, tmp_path / "results", digits=3)
    assert (tmp_path / "results.md").read_text() == MARKDOWN
    assert (tmp_path / "results.csv").read_text() == CSV
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.md"]


def test_chosen_columns_and_missing_metrics():
    table = results_table(RUNS, metrics=["ndcg@10"])
    assert table.metrics == ("ndcg@10",) and table.mean_sm.shape == (2, 1)
    with pytest.raises(ValueError, match="system 'tiger', seed run 1: no scalar metric 'mrr'"):
        results_table({"sasrec": [{"mrr": 0.1}], "tiger": [{"mrr": 0.2}, {"hr": 0.3}]})
    with pytest.raises(ValueError, match="no scalar metric 'per_user'"):
        results_table(RUNS, metrics=["per_user"])
    with pytest.raises(ValueError, match="has no seeds"):
        results_table({"sasrec": []})
