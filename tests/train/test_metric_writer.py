"""Metric writing: TensorBoard events read back without TensorFlow, metrics.jsonl, progress line."""

import json
import logging
import math
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from sgrec_jax.train.metric_writer import METRICS_FILE, MetricWriter, ProgressLogger


def read_events(logdir) -> list[event_pb2.Event]:
    """Every event of every event file in logdir, in file then record order (TFRecord framing:
    u64 length, u32 length crc, payload, u32 payload crc)."""
    events = []
    for path in sorted(logdir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            events.append(event_pb2.Event.FromString(payload))
    return events


def scalars(events) -> list[tuple[int, str, float]]:
    return [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]


def read_jsonl(logdir) -> list[dict]:
    return [json.loads(line) for line in (logdir / METRICS_FILE).read_text().splitlines()]


def test_scalars_reach_tensorboard_and_jsonl_without_tensorflow(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": jnp.float32(2.5), "accuracy": 0.25})
        writer.write_scalars(2, {"loss": np.array([1.5]), "accuracy": np.float64(0.5)})
        # Flushed after every write: readable while the run goes on.
        assert read_jsonl(tmp_path)[-1] == {"step": 2, "loss": 1.5, "accuracy": 0.5}
    assert "tensorflow" not in sys.modules
    assert sorted(scalars(read_events(tmp_path))) == [
        (1, "accuracy", 0.25), (1, "loss", 2.5), (2, "accuracy", 0.5), (2, "loss", 1.5)
    ]
    assert read_jsonl(tmp_path)[0] == {"step": 1, "loss": 2.5, "accuracy": 0.25}


def test_non_finite_values_round_trip(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write_scalars(1, {"loss": float("nan"), "grad_norm": float("inf")})
    (row,) = read_jsonl(tmp_path)
    assert math.isnan(row["loss"]) and row["grad_norm"] == math.inf


def test_non_scalar_metric_is_rejected(tmp_path):
    with MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="'logits'"):
        writer.write_scalars(1, {"logits": np.zeros(3)})


def test_resume_purges_the_points_after_the_checkpoint(tmp_path):
    with MetricWriter(tmp_path) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": float(step)})
    # Resumed from the checkpoint of step 3: steps 4 and 5 are recomputed.
    with MetricWriter(tmp_path, purge_step=4) as writer:
        writer.write_scalars(4, {"loss": 40.0})
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)
    ]
    # TensorBoard drops the old steps >= 4 on the SessionLog.START at step 4.
    events = read_events(tmp_path)
    starts = [e.step for e in events if e.HasField("session_log")
              and e.session_log.status == event_pb2.SessionLog.START]
    assert starts == [4]


def download(store, prefix, local_dir):
    """The objects under `prefix` as files of local_dir (emptied first)."""
    for path in local_dir.iterdir():
        path.unlink()
    for key in store.keys(prefix):
        (local_dir / key.removeprefix(prefix)).write_bytes(store.get(key)[0])
    return local_dir


def test_on_gcs_files_are_staged_and_uploaded_whole(fake_gcs, tmp_path):
    """Object stores cannot append: metrics.jsonl and the event file reach gs:// on flush and
    close, and a resumed writer purges and extends what is there."""
    logdir, prefix = "gs://fake-bucket/run/sft", "fake-bucket/run/sft/"
    with MetricWriter(logdir) as writer:
        for step in range(1, 6):
            writer.write_scalars(step, {"loss": float(step)})
        assert not fake_gcs.keys(prefix)  # staged locally until a flush
        writer.flush()
        assert read_jsonl(download(fake_gcs, prefix, tmp_path))[-1] == {"step": 5, "loss": 5.0}
    assert sorted(scalars(read_events(download(fake_gcs, prefix, tmp_path)))) == [
        (s, "loss", float(s)) for s in range(1, 6)
    ]
    with MetricWriter(logdir, purge_step=4) as writer:
        writer.write_scalars(4, {"loss": 40.0})
    download(fake_gcs, prefix, tmp_path)
    assert [(r["step"], r["loss"]) for r in read_jsonl(tmp_path)] == [
        (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0)
    ]
    events = read_events(tmp_path)
    assert (4, "loss", 40.0) in scalars(events)
    assert [e.step for e in events if e.HasField("session_log")
            and e.session_log.status == event_pb2.SessionLog.START] == [4]


def test_progress_line_reports_rate_eta_and_metrics():
    progress = ProgressLogger(100, every=10, keys=("loss", "accuracy"))
    assert progress.line(1, {"loss": 9.0}, now=0.0) is None
    assert progress.line(9, {"loss": 9.0}, now=2.0) is None
    line = progress.line(10, {"loss": jnp.float32(0.123456), "grad_norm": 1.0}, now=3.0)
    # 9 steps in 3 s; 90 steps left.
    assert line == "step 10/100 (10%) | 3 steps/s | ETA 0m30s | loss 0.1235"
    line = progress.line(20, {"loss": 0.5, "accuracy": 0.75}, now=8.0)
    assert line == "step 20/100 (20%) | 2 steps/s | ETA 0m40s | loss 0.5 accuracy 0.75"
    assert progress.line(100, {}, now=3608.0).startswith("step 100/100 (100%) | 0.0222 steps/s")


def test_progress_logs_through_absl(caplog):
    progress = ProgressLogger(4000, every=1)
    with caplog.at_level(logging.INFO):
        progress.log(1, {"loss": 1.0})
        progress.log(2, {"loss": 0.5})
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0].startswith("step 1/4000 (0%) | nan steps/s | ETA ? | loss 1")
    assert messages[1].startswith("step 2/4000 (0%) |") and messages[1].endswith("loss 0.5")
    assert {r.name for r in caplog.records} == {"absl"}


def test_at_signs_become_legal_tensorboard_tags_and_stay_in_jsonl(tmp_path, caplog):
    with caplog.at_level(logging.INFO), MetricWriter(tmp_path) as writer:
        writer.write_scalars(3, {"valid/recall@10": 0.125})
    assert scalars(read_events(tmp_path)) == [(3, "valid/recall_at_10", 0.125)]
    assert read_jsonl(tmp_path) == [{"step": 3, "valid/recall@10": 0.125}]
    assert "illegal" not in caplog.text
