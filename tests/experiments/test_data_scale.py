"""The scale script's phases at a tiny size (the real measurement is run by hand)."""

import numpy as np
from etils import epath

from experiments.data_scale import (
    digit_codes,
    measure_pipeline,
    measure_read,
    measure_write,
    scale_config,
    shard_summary,
)


def test_write_read_and_pipeline_phases_report_their_figures(tmp_path):
    shards = epath.Path(tmp_path) / "shards"
    config = scale_config(600, num_items=200, max_history=8, user_block_size=25)
    written = measure_write(shards, config)
    summary = shard_summary(shards)
    assert abs(summary["interactions"] - 600) < 200 and summary["users"] == 60
    assert summary["train_examples"] == summary["interactions"] - 3 * summary["users"]
    assert summary["train_shard_mib"] > 0 and written["write_peak_rss_mib"] > 0
    for source in ("memory", "array_record"):
        read = measure_read(str(shards), source, batch_size=16, num_batches=3)
        assert read["read_examples_per_s"] > 0 and read["read_peak_rss_mib"] > 0
    # The pipeline over the shards the write phase wrote (its data settings check passes),
    # with SIDs and a generator smaller than the measurement's (the test's time is compiling).
    config.sid.update(codebook_size=8)
    config.sid.embeddings.dim = 16
    config.model.options.update(num_layers=1, d_model=32, num_heads=2, d_ff=64)
    run = measure_pipeline(config, "array_record", str(shards), epath.Path(tmp_path) / "run",
                           steps=2, batch_size=16, valid_users=8, test_users=12)
    assert run["pipeline_test_users"] == 12 and 0 <= run["pipeline_recall@10"] <= 1
    assert run["pipeline_examples_per_s"] > 0 and run["pipeline_peak_rss_mib"] > 0


def test_digit_codes_are_distinct_sids():
    codes, sizes = digit_codes(200)
    assert sizes == (6, 6, 6) and len({tuple(c) for c in codes}) == 200
    assert (codes < np.array(sizes)).all()
