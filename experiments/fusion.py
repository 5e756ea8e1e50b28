r"""Product-of-experts rerank of a finished SFT run: the generator's exact log-probs fused with
item-transition counts, lam chosen on validation users, reported on test users.

    SGREC_DATA_DIR=... python -m experiments.fusion --workdir=RUN_DIR [--out_dir=RUN_DIR/fusion] \
        [--lams=0,0.25,0.5,1,2,4,8] [--counting_candidates=50]

RUN_DIR is a finished `experiments.train` run with the sft stage (config.json, sids.npz,
sft/checkpoints, results.json); it is only read. For every request the candidates are the
generator's beam top-B (B = the run's eval.beam_size) plus the counting model's top-M items with a
positive transition score, each scored log p_gen(item | history) + lam * log1p(s(item))
(sgrec_jax/evaluation/fusion.py). The counting model is the run's item_transition baseline
(config.baselines.item_transition.weights, default 1, 0.5, 0.25), fitted on the training part of
the sequences.

Protocol: every lam of the grid ranks the validation users the SFT stage validated on (the same
seeded subsample of config.eval.valid_users); the lam with the best validation ndcg@10 (ties: the
smaller) is selected, and the test metrics of that lam are the result. The test metrics of every
other lam are written too, under "fusion/test_curve_not_for_selection", for transparency only.

Writes OUT_DIR/results.json (the selected lam's test report with the same keys as the SFT
stage's, diagnostics included; the curves; the selected lam; provenance) and
OUT_DIR/test_rankings.npz (the selected lam's rankings, in the SFT stage's format, for
sgrec_jax/evaluation/paired.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, read_npz, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.sources import load_splits
from sgrec_jax.data.split import Examples, training_sequences
from sgrec_jax.evaluation.diagnostics import TrainingStatistics
from sgrec_jax.evaluation.fusion import (
    candidate_logprobs,
    candidate_union,
    check_lambdas,
    counting_candidates,
    fused_ranking,
    select_lambda,
    transition_scores,
)
from sgrec_jax.models.counting import ItemTransition
from sgrec_jax.serving.recommender import Recommender
from sgrec_jax.stages.baselines import item_transition_weights
from sgrec_jax.stages.cli import define_workdir, quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.finished_run import check_run_dir, load_run_dataset
from sgrec_jax.stages.pipeline import RESULTS_FILE
from sgrec_jax.train.evaluate import (
    Rankings,
    rank_with_generator,
    ranking_report,
    scalar_metrics,
    subsample,
)

DEFAULT_LAMS = ("0", "0.25", "0.5", "1", "2", "4", "8")
SELECTION_METRIC = "ndcg@10"
TOP_K = 10
RANKINGS_FILE = "test_rankings.npz"

_WORKDIR = define_workdir("A finished SFT run directory (read only).")
_OUT_DIR = flags.DEFINE_string("out_dir", None, "Where results go (default WORKDIR/fusion).")
_LAMS = flags.DEFINE_list("lams", list(DEFAULT_LAMS), "The lam grid (each >= 0).")
_COUNTING = flags.DEFINE_integer("counting_candidates", 50,
                                 "M: the counting model's top-M items join the candidates.")
flags.mark_flag_as_required("workdir")


@dataclasses.dataclass(frozen=True)
class Candidates:
    """One split's requests with their scored candidates (rows as `examples`).

    Attributes:
      items_uc: int32 [U, C] beam items then counting items, -1 padding.
      logp_uc: float32 [U, C] exact generator log-probs, -inf for padding.
      count_uc: float64 [U, C] weighted transition scores, 0 without counts.
      argmax_invalid_u: the generator's unconstrained greedy SID is no item (as the SFT report).
    """

    examples: Examples
    items_uc: np.ndarray
    logp_uc: np.ndarray
    count_uc: np.ndarray
    argmax_invalid_u: np.ndarray

    def rankings(self, lam: float) -> Rankings:
        items_uk, scores_uk = fused_ranking(self.items_uc, self.logp_uc, self.count_uc, lam,
                                            TOP_K)
        return Rankings(self.examples.user, self.examples.target, items_uk, scores_uk,
                        self.argmax_invalid_u)

    def target_share(self) -> float:
        """Share of requests whose target is a candidate: no lam can do better at any k."""
        return float((self.items_uc == self.examples.target[:, None]).any(1).mean())


def score_candidates(recommender: Recommender, counting: ItemTransition, examples: Examples, *,
                     num_counting: int, batch_size: int, level_scoring: str) -> Candidates:
    """Beam top-B plus counting top-M candidates of every request, scored by both experts."""
    beam = rank_with_generator(
        recommender.model, recommender.catalog, examples, beam_size=recommender.beam_size,
        k=recommender.beam_size, batch_size=batch_size, level_scoring=level_scoring,
    )
    items_uc = candidate_union(beam.items_uk, counting_candidates(counting, examples.history,
                                                                  num_counting))
    logp_uc = candidate_logprobs(
        recommender.model, recommender.catalog, np.asarray(recommender.model.codes[...]),
        examples.history, items_uc, batch_size=batch_size, level_scoring=level_scoring,
    )
    count_uc = transition_scores(counting.scores(examples.history), items_uc)
    return Candidates(examples, items_uc, logp_uc, count_uc, beam.argmax_invalid_u)


def run_fusion(workdir, out_dir=None, *, lams: Sequence[float] = tuple(map(float, DEFAULT_LAMS)),
               num_counting: int = 50) -> dict[str, Any]:
    """The whole protocol (module docstring); writes and returns results.json's content."""
    start = time.perf_counter()
    try:
        lams = check_lambdas(lams)
    except ValueError as e:
        raise ValueError(f"--lams: {e}") from None
    if num_counting < 0:
        raise ValueError(f"--counting_candidates must be >= 0, got {num_counting}")
    workdir = as_path(workdir)
    config = check_run_dir(workdir)
    out_dir = as_path(out_dir) if out_dir else workdir / "fusion"

    dataset = load_run_dataset(workdir, config)
    record = provenance(dataset.source_files, config)
    data = config.data
    splits = load_splits(dataset, max_history=data.max_history,
                         source=data.get("source", "memory"), shards_dir=data.get("shards_dir", ""))
    # The validation users the SFT stage selected its checkpoint on.
    valid = subsample(splits.valid, config.eval.valid_users, config.seed)
    level_scoring = config.eval.get("level_scoring", "renormalized")

    recommender = Recommender.from_workdir(workdir)
    sequences = training_sequences(dataset)
    weights = item_transition_weights(config)
    counting = ItemTransition.fit(sequences, dataset.num_items, weights=weights)
    options = dict(lams=list(lams), counting_candidates=num_counting,
                   beam_size=recommender.beam_size, level_scoring=level_scoring,
                   item_transition_weights=list(weights), selection_metric=SELECTION_METRIC,
                   source_run=str(workdir))
    scored = {}
    for name, examples in (("valid", valid), ("test", splits.test)):
        split_start = time.perf_counter()
        scored[name] = score_candidates(recommender, counting, examples, num_counting=num_counting,
                                        batch_size=config.eval.batch_size,
                                        level_scoring=level_scoring)
        logging.info("%s: %d requests scored in %.1fs", name, len(examples),
                     time.perf_counter() - split_start)

    num_items = dataset.num_items
    valid_curve = {lam: scalar_metrics(ranking_report(scored["valid"].rankings(lam), num_items))
                   for lam in lams}
    selected = select_lambda(valid_curve, SELECTION_METRIC)
    stats = TrainingStatistics.from_sequences(sequences, num_items)
    codes_nl = np.asarray(recommender.model.codes[...])
    test_rankings = {lam: scored["test"].rankings(lam) for lam in lams}
    test_curve = {lam: scalar_metrics(ranking_report(
        rankings, num_items, history_uh=splits.test.history, stats=stats, codes_nl=codes_nl))
        for lam, rankings in test_rankings.items()}

    sft_rankings_path = workdir / "sft" / RANKINGS_FILE
    beam_agreement = None
    if sft_rankings_path.exists():  # the reloaded generator must rank as the run did
        saved = read_npz(sft_rankings_path)["items_uk"]
        beam = scored["test"].items_uc[:, :TOP_K]
        if saved.shape == beam.shape:
            beam_agreement = float((saved == beam).all(1).mean())

    results = {
        **test_curve[selected],
        "fusion/lam": selected,
        "fusion/valid_curve": {str(lam): report for lam, report in valid_curve.items()},
        "fusion/test_curve_not_for_selection": {str(lam): report
                                                for lam, report in test_curve.items()},
        "fusion/valid_users": len(valid),
        "fusion/candidates_per_request": float((scored["test"].items_uc >= 0).sum(1).mean()),
        "fusion/candidate_target_share": scored["test"].target_share(),
        "fusion/beam_agrees_with_sft_rankings": beam_agreement,
        "fusion/options": options,
        "dataset": {"name": dataset.name, **dataset.stats()},
        "wall_seconds": time.perf_counter() - start,
        "provenance": record,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    test_rankings[selected].save(out_dir / RANKINGS_FILE)
    write_json(out_dir / RESULTS_FILE, results)
    logging.info("results written to %s", out_dir / RESULTS_FILE)
    return results


def format_table(results: dict[str, Any]) -> str:
    """Per lam: validation ndcg@10 and recall@10 (selection), then the test metrics."""
    selected = results["fusion/lam"]
    valid, test = results["fusion/valid_curve"], results["fusion/test_curve_not_for_selection"]
    head = (f"{'lam':>6}  {'valid ndcg@10':>13}  {'valid R@10':>10}  |  {'test R@10':>9}  "
            f"{'test ndcg@10':>12}  {'R@10|follows':>12}  {'R@10|not_fol':>12}")
    lines = [head, "-" * len(head)]
    for lam, v in valid.items():
        t = test[lam]
        mark = "  <- selected on validation" if float(lam) == selected else ""
        lines.append(
            f"{float(lam):>6g}  {v['ndcg@10']:>13.4f}  {v['recall@10']:>10.4f}  |  "
            f"{t['recall@10']:>9.4f}  {t['ndcg@10']:>12.4f}  "
            f"{t.get('diag/recall@10|follows', float('nan')):>12.4f}  "
            f"{t.get('diag/recall@10|not_follows', float('nan')):>12.4f}{mark}"
        )
    lines.append(f"test (lam {selected:g}, selected by validation {SELECTION_METRIC}): "
                 f"recall@10 {results['recall@10']:.4f} ndcg@10 {results['ndcg@10']:.4f}; "
                 f"test columns of the other lams are not used for selection")
    lines.append(f"candidates per request {results['fusion/candidates_per_request']:.1f}, "
                 f"holding the target for {results['fusion/candidate_target_share']:.4f} of "
                 "test users")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()

    def lams():
        try:
            return [float(v) for v in _LAMS.value]
        except ValueError as e:
            raise ValueError(f"--lams must be numbers, got {_LAMS.value}: {e}") from None

    results = run_or_exit(lambda: run_fusion(_WORKDIR.value, _OUT_DIR.value, lams=lams(),
                                             num_counting=_COUNTING.value))
    print(format_table(results))


if __name__ == "__main__":
    run_app(main)
