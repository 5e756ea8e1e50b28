r"""Test metrics of any SFT checkpoint of a finished run, beside the one validation selected.

    SGREC_DATA_DIR=... python -m experiments.evaluate_checkpoint --workdir=RUN_DIR --step=STEP \
        [--results_dir=RUN_DIR/checkpoint_STEP] [--without_copy_head | --copy_gate_shift=D]
        [--beam_size=B]

The SFT stage reports the test metrics of one checkpoint, the best by validation
`config.sft.best_metric`. This answers what another kept checkpoint gives (the last one, or the
best by another validation metric), ranked and reported exactly as the stage ranks and reports:
the run's beam size and level scoring, its test users, the same diagnostics; with the
validation metrics the run logged at that step beside them. It is a diagnostic, not a
selection rule: a checkpoint chosen by its test metrics is not a protocol result.

--without_copy_head ranks with a copy-head model's generator part alone (the head removed, the
transition memory still read as encoder context): how much of the model's ranking, per
diagnostic bucket, the pointer makes, and whether the generator it trained beside the pointer
still ranks the users whose target is not in the memory as a plain generator does. Its
"checkpoint/valid" stays what the run logged at that step, i.e. the whole model's.

--copy_gate_shift=D adds D to the copy head's gate logit before ranking (a decoding knob, like a
temperature): D > 0 gives the memory's items more of each level's mass, D < 0 the generator's.
Training fits the gate to the likelihood over all users, which need not be what ranks best. The
shifted model also ranks the validation users the SFT stage validated on (the same seeded
subset), reported as "checkpoint/valid_decoded", so a shift can be chosen on validation.

--beam_size=B ranks with beam B instead of the run's config.eval.beam_size (B >= 10), test and
those validation users alike ("checkpoint/valid_decoded"): whether a wider beam finds items the
run's beam pruned at an early SID level (TIGER's recipes use 50).

Writes RESULTS_DIR/results.json (the test report with the SFT stage's keys, "checkpoint/step", the
step's "checkpoint/valid" metrics from sft/metrics.jsonl, the run's selected step, provenance)
and RESULTS_DIR/test_rankings.npz (the SFT stage's format). RUN_DIR is only read.
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from absl import app, flags, logging

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, read_json, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.sources import load_splits
from sgrec_jax.data.split import training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.serving.recommender import Recommender
from sgrec_jax.stages.cli import define_workdir, quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.finished_run import check_run_dir, load_run_dataset
from sgrec_jax.stages.pipeline import RESULTS_FILE
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.evaluate import rank_with_generator, ranking_report, scalar_metrics, subsample

RANKINGS_FILE = "test_rankings.npz"

_WORKDIR = define_workdir("A finished SFT run directory (read only).")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint's training step (a kept checkpoint).")
_RESULTS_DIR = flags.DEFINE_string("results_dir", None,
                               "Where results go (default WORKDIR/checkpoint_STEP, with "
                               "_without_copy_head, _gate_shift<D>, _beam<B> appended under "
                               "those flags).")
_WITHOUT_COPY_HEAD = flags.DEFINE_bool(
    "without_copy_head", False, "Rank with the generator part of a copy-head model alone.")
_COPY_GATE_SHIFT = flags.DEFINE_float(
    "copy_gate_shift", 0.0, "Added to the copy head's gate logit before ranking; validation is "
    "ranked again with it (default 0: the trained gate).")
_BEAM_SIZE = flags.DEFINE_integer(
    "beam_size", 0, "Beam width for test and validation (default 0: the run's eval.beam_size).")
flags.mark_flags_as_required(["workdir", "step"])


def kept_steps(workdir) -> list[int]:
    """The steps of the SFT checkpoints kept in `workdir`, as Orbax lists them."""
    with Checkpointer(as_path(workdir) / "sft" / "checkpoints") as checkpointer:
        return checkpointer.all_steps()


def logged_valid_metrics(workdir, step: int) -> dict[str, float]:
    """The validation metrics the run logged at `step` (sft/metrics.jsonl), {} if none."""
    path = as_path(workdir) / "sft" / "metrics.jsonl"
    found: dict[str, float] = {}
    if not path.exists():
        return found
    for line_no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{line_no}: not a JSON line ({e})") from None
        if row.get("step") == step:
            found.update({k.removeprefix("valid/"): v for k, v in row.items()
                          if k.startswith("valid/")})
    return found


def evaluate_checkpoint(workdir, step: int, results_dir=None, *,
                        without_copy_head: bool = False,
                        copy_gate_shift: float = 0.0, beam_size: int = 0) -> dict[str, Any]:
    """Ranks the run's test users with checkpoint `step` (with its copy head removed if
    `without_copy_head`, its gate logit shifted by `copy_gate_shift`, with beam `beam_size`
    when > 0); writes and returns results.json's content (module docstring)."""
    start = time.perf_counter()
    workdir = as_path(workdir)
    config = check_run_dir(workdir)
    steps = kept_steps(workdir)
    if step not in steps:
        raise ValueError(f"--step {step}: {workdir / 'sft' / 'checkpoints'} keeps steps "
                         f"{steps} (config.sft.keep_checkpoints decides how many are kept)")
    for flag, used in (("--without_copy_head", without_copy_head),
                       ("--copy_gate_shift", copy_gate_shift != 0.0)):
        if used and not config.model.options.get("transition_memory_copy", False):
            raise ValueError(f"{flag}: {workdir} trained no copy head "
                             "(model.options.transition_memory_copy is False)")
    if without_copy_head and copy_gate_shift:
        raise ValueError("--copy_gate_shift shifts the gate of the copy head that "
                         "--without_copy_head removes: give one of them")
    if beam_size and beam_size < 10:
        raise ValueError(f"--beam_size {beam_size}: must be >= 10 (the K of ndcg@10)")
    suffix = ("_without_copy_head" if without_copy_head
              else f"_gate_shift{copy_gate_shift:+g}" if copy_gate_shift else "")
    suffix += f"_beam{beam_size}" if beam_size else ""
    results_dir = (as_path(results_dir) if results_dir
                   else workdir / f"checkpoint_{step}{suffix}")
    dataset = load_run_dataset(workdir, config)
    data = config.data
    splits = load_splits(dataset, max_history=data.max_history,
                         source=data.get("source", "memory"), shards_dir=data.get("shards_dir", ""))
    test = subsample(splits.test, config.eval.get("test_users", 0), config.seed)
    recommender = Recommender.from_workdir(workdir, step=step)
    beam = beam_size or recommender.beam_size
    if without_copy_head:
        # The generator then scores every level with its own logits (SidGenerator._copy).
        # Only recommender.model changes: the Recommender's own split of it (recommend())
        # keeps the head, and is not used here.
        recommender.model.copy_head = None

    def rank(examples):
        return rank_with_generator(
            recommender.model, recommender.catalog, examples, beam_size=beam,
            k=10, batch_size=config.eval.batch_size,
            level_scoring=config.eval.get("level_scoring", "renormalized"))

    valid_decoded = None
    if copy_gate_shift:
        gate = recommender.model.copy_head.gate
        gate.bias[...] = gate.bias[...] + copy_gate_shift
    if copy_gate_shift or beam_size:  # Decoding knobs: choose them on validation.
        valid = subsample(splits.valid, config.eval.valid_users, config.seed)
        valid_decoded = scalar_metrics(ranking_report(rank(valid), dataset.num_items))
    rankings = rank(test)
    stats = TrainingStatistics.from_sequences(training_sequences(dataset), dataset.num_items)
    report = scalar_metrics(ranking_report(
        rankings, dataset.num_items, history_uh=test.history, stats=stats,
        codes_nl=np.asarray(recommender.model.codes[...])))
    run_results = read_json(workdir / RESULTS_FILE)
    results = {
        **report,
        "checkpoint/step": step,
        "checkpoint/valid": logged_valid_metrics(workdir, step),
        "checkpoint/selected_step": run_results.get("sft/best_step"),
        "checkpoint/source_run": str(workdir),
        "checkpoint/without_copy_head": without_copy_head,
        "checkpoint/copy_gate_shift": copy_gate_shift,
        **({"checkpoint/valid_decoded": valid_decoded} if valid_decoded is not None else {}),
        "eval/beam_size": beam,
        "dataset": {"name": dataset.name, **dataset.stats()},
        "wall_seconds": time.perf_counter() - start,
        "provenance": provenance(dataset.source_files, config),
    }
    results_dir.mkdir(parents=True, exist_ok=True)
    rankings.save(results_dir / RANKINGS_FILE)
    write_json(results_dir / RESULTS_FILE, results)
    logging.info("results written to %s", results_dir / RESULTS_FILE)
    return results


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    results = run_or_exit(lambda: evaluate_checkpoint(
        _WORKDIR.value, _STEP.value, _RESULTS_DIR.value,
        without_copy_head=_WITHOUT_COPY_HEAD.value, copy_gate_shift=_COPY_GATE_SHIFT.value,
        beam_size=_BEAM_SIZE.value))
    valid = results.get("checkpoint/valid_decoded", results["checkpoint/valid"])
    print(f"step {results['checkpoint/step']} (the run selected "
          f"{results['checkpoint/selected_step']}): test "
          + " ".join(f"{k} {results[k]:.4f}" for k in ("recall@5", "ndcg@5", "recall@10",
                                                       "ndcg@10", "coverage@10"))
          + ("; the run's logged valid (whole model) " if results["checkpoint/without_copy_head"]
             else "; valid (this decoding) " if "checkpoint/valid_decoded" in results
             else "; valid ") + " ".join(f"{k} {valid[k]:.4f}" for k in ("recall@10", "ndcg@10")
                                  if k in valid))


if __name__ == "__main__":
    run_app(main)
