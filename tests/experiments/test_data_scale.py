"""The scale script's phases at a tiny size (the real measurement is run by hand)."""

import numpy as np
from etils import epath

from experiments.data_scale import digit_codes, measure_read, measure_write, shard_summary


def test_write_and_read_phases_report_their_figures(tmp_path):
    shards = epath.Path(tmp_path) / "shards"
    written = measure_write(shards, 600, num_items=200, max_history=8, user_block_size=25)
    summary = shard_summary(shards)
    assert abs(summary["interactions"] - 600) < 200 and summary["users"] == 60
    assert summary["train_examples"] == summary["interactions"] - 3 * summary["users"]
    assert summary["train_shard_mib"] > 0 and written["write_peak_rss_mib"] > 0
    for source in ("memory", "array_record"):
        read = measure_read(str(shards), source, batch_size=16, num_batches=3)
        assert read["read_examples_per_s"] > 0 and read["read_peak_rss_mib"] > 0


def test_digit_codes_are_distinct_sids():
    codes, sizes = digit_codes(200)
    assert sizes == (6, 6, 6) and len({tuple(c) for c in codes}) == 200
    assert (codes < np.array(sizes)).all()
