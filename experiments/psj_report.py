r"""PSJ stage 2 on logged data: PairAUC of the aggregators and the distilled scorer's agreement.

    SGREC_DATA_DIR=/work/shared/data python -m experiments.psj_report \
        --config=experiments/configs/scientific_sids.py --workdir=DIR

Builds preference pairs from the training requests (logged next item vs a random, a nearest-
neighbour or a popularity-sampled negative), scores both items with the feature backend on the
item text embeddings, holds out a seeded 20% of the users, trains the GRPO aggregator and the
Bradley-Terry head on the other users' pairs (all negative kinds mixed), and reports held-out
PairAUC per negative kind for uniform weights, each aspect alone, GRPO and Bradley-Terry. Then it
trains the distilled scorer on the same evidence and reports its held-out agreement. Everything
goes to DIR/judge/psj_report.json.

With --judge_dir=JDIR (a stage-1 run's work directory, `experiments.judge ...
--config.judge.log_negatives=True`, e.g. with an LLM judge) it compares evidence sources on the
pairs that run judged instead: each sampled request's target against its random, nearest and
popular negative, kept where the stage-1 store answered both items. The same pairs, split by the
same held-out users, are scored with the stage-1 evidence ("llm"), the feature evidence
("features") and both side by side ("both", 2A aspects); for each source the GRPO aggregator and
Bradley-Terry are trained on the other users' pairs and held-out PairAUC is reported per negative
kind (uniform weights, each aspect alone, GRPO, Bradley-Terry), with the pair counts. Written to
DIR/judge/psj_report_judged.json.

    python -m experiments.psj_report --config=experiments/configs/scientific_sids.py \
        --workdir=DIR --judge_dir=DIR
"""

from __future__ import annotations

import functools
import os
import time

import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, read_npz, write_json
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.split import leave_one_out
from sgrec_jax.judge.aggregator import GrpoOptions, train_aggregator
from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.judge.bradley_terry import BradleyTerryOptions, train_bradley_terry
from sgrec_jax.judge.context import context_tables, features_of
from sgrec_jax.judge.defaults import JUDGE_DIR
from sgrec_jax.judge.distill import (
    DistillOptions,
    agreement,
    evidence_rows,
    predict_rows,
    train_distilled,
)
from sgrec_jax.judge.features import feature_aspects, feature_tables
from sgrec_jax.judge.holistic import pair_auc
from sgrec_jax.judge.pairs import (
    NEGATIVES,
    Pairs,
    held_out_users,
    log_pairs,
    pair_evidence,
    store_evidence,
)
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import RewardSetup
from sgrec_jax.stages.cli import define_workdir, quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import load_configured_dataset

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = define_workdir("Work directory for outputs and caches.")
_JUDGE_DIR = flags.DEFINE_string(
    "judge_dir", "", "A stage-1 work directory (JDIR/judge/sample.npz, evidence.npz): compare "
    "its evidence with the feature evidence on the pairs it judged (module docstring).")
_HELD_OUT = flags.DEFINE_float(
    "held_out_fraction", 0.2, "Fraction of the users whose pairs are held out (--judge_dir only; "
    "a small judged sample may want more than 0.2 to have held-out pairs of every kind).")
flags.mark_flags_as_required(["config", "workdir"])

HELD_OUT_FRACTION = 0.2
REPORT_FILE = os.path.join("judge", "psj_report.json")
JUDGED_REPORT_FILE = os.path.join("judge", "psj_report_judged.json")
SOURCES = ("llm", "features", "both")


def psj_report(config, workdir: str) -> dict:
    start = time.time()
    seed = int(config.seed)
    dataset = load_configured_dataset(config)
    record = provenance(dataset.source_files, config)  # the code that computes, taken first
    setup = RewardSetup(config=config, dataset=dataset, workdir=workdir, seed=seed)
    emb_nd = setup.text_embeddings()
    ctx = context_tables(dataset, emb_nd)
    aspects_fn = functools.partial(feature_aspects, feature_tables(dataset, emb_nd))
    train_examples = leave_one_out(dataset, max_history=config.data.max_history).train
    held_u = held_out_users(dataset.num_users, HELD_OUT_FRACTION, seed)

    parts = {}  # negative kind -> arrays of its pairs: held, x, ev_i, ev_j, item_i, item_j
    for negative in NEGATIVES:
        logging.info("pairs with %s negatives", negative)
        pairs = log_pairs(dataset, train_examples, negative=negative, seed=seed, emb_nd=emb_nd)
        ev_i, ev_j = pair_evidence(pairs, aspects_fn)
        parts[negative] = {"held": held_u[pairs.user], "x": features_of(ctx, pairs.history),
                           "ev_i": ev_i, "ev_j": ev_j, "item_i": pairs.item_i,
                           "item_j": pairs.item_j}

    def gather(held: bool) -> dict[str, np.ndarray]:
        """The pairs of all negative kinds, of the held-out users or of the others."""
        return {k: np.concatenate([p[k][p["held"] == held] for p in parts.values()])
                for k in ("x", "ev_i", "ev_j", "item_i", "item_j")}

    train, test = gather(False), gather(True)
    logging.info("training the aggregators on %d pairs", len(train["x"]))
    grpo, grpo_log = train_aggregator(train["x"], train["ev_i"], train["ev_j"], GrpoOptions(),
                                      seed)
    bt, bt_log = train_bradley_terry(train["x"], train["ev_i"], train["ev_j"],
                                     BradleyTerryOptions(), seed)
    trained_s = time.time() - start

    num_aspects = len(ASPECTS)
    report: dict = {
        "dataset": dataset.name, "seed": seed, "aspects": list(ASPECTS),
        "held_out_fraction": HELD_OUT_FRACTION,
        "train_pairs": int(len(train["x"])),
        "grpo/final_reward_mean": float(np.mean([h["reward_mean"] for h in grpo_log[-20:]])),
        "bt/final_accuracy": float(np.mean([h["accuracy"] for h in bt_log[-20:]])),
        "bt/beta": bt_log[-1]["beta"],
    }
    for negative, part in parts.items():
        held = part["held"]
        x_h, ev_i_h, ev_j_h = part["x"][held], part["ev_i"][held], part["ev_j"][held]
        w_grpo = np.asarray(grpo.weights(jnp.asarray(x_h)))
        w_bt = np.asarray(bt.weights(jnp.asarray(x_h)))
        prefix = f"pair_auc/{negative}"
        report[f"held_out_pairs/{negative}"] = int(held.sum())
        report[f"{prefix}/uniform"] = pair_auc(np.full(num_aspects, 1 / num_aspects), ev_i_h,
                                               ev_j_h)
        for a, name in enumerate(ASPECTS):
            report[f"{prefix}/only_{name}"] = pair_auc(np.eye(num_aspects)[a], ev_i_h, ev_j_h)
        report[f"{prefix}/grpo"] = pair_auc(w_grpo, ev_i_h, ev_j_h)
        report[f"{prefix}/bradley_terry"] = pair_auc(w_bt, ev_i_h, ev_j_h)

    # Every negative kind has the same held-out requests, so the weights are described once.
    x_h = parts[NEGATIVES[0]]["x"][parts[NEGATIVES[0]]["held"]]
    for method, model in (("grpo", grpo), ("bradley_terry", bt)):
        w = np.asarray(model.weights(jnp.asarray(x_h)))
        for a, name in enumerate(ASPECTS):
            report[f"weights/{method}/mean/{name}"] = float(w[:, a].mean())
        report[f"weights/{method}/std_over_requests"] = float(w.std(axis=0).mean())

    logging.info("training the distilled scorer")
    # The distilled scorer: trained on the training users' pairs (both items), checked on the
    # held-out users' pairs against the feature evidence.
    scorer, scorer_log = train_distilled(
        *evidence_rows(*(train[k] for k in ("x", "item_i", "item_j", "ev_i", "ev_j"))),
        emb_nd, DistillOptions(), seed)
    x_rows, items_rows, ev_rows = evidence_rows(
        *(test[k] for k in ("x", "item_i", "item_j", "ev_i", "ev_j")))
    pred_rows = predict_rows(scorer, x_rows, items_rows, emb_nd)
    w_rows = np.asarray(grpo.weights(jnp.asarray(x_rows)))
    report.update({f"distilled/{k}": v for k, v in agreement(pred_rows, ev_rows).items()})
    report["distilled/spearman/holistic_grpo_weights"] = agreement(
        pred_rows, ev_rows, w_rows)["spearman/holistic"]
    report["distilled/final_train_mse"] = float(np.mean([h["loss"] for h in scorer_log[-20:]]))
    report["seconds/train_aggregators"] = trained_s
    report["seconds/total"] = time.time() - start
    report["provenance"] = record
    write_json(os.path.join(workdir, REPORT_FILE), report)
    return report


def judged_pairs(judge_dir, num_users: int) -> tuple[dict[str, Pairs], EvidenceStore]:
    """Per negative kind, the target-vs-negative pairs of a stage-1 sample (sample.npz) whose
    two items the stage-1 store (evidence.npz) answered; and that store."""
    folder = as_path(judge_dir) / JUDGE_DIR
    sample = read_npz(folder / "sample.npz")
    store = EvidenceStore.load(folder / "evidence.npz")
    columns = [str(c) for c in sample["columns"]]
    missing = [k for k in ("target", *NEGATIVES) if k not in columns]
    if missing:
        raise ValueError(f"{folder / 'sample.npz'}: no candidate column(s) {missing}; run stage 1 "
                         "with --config.judge.candidates=target... "
                         "--config.judge.log_negatives=True")
    if sample["users"].max(initial=0) >= num_users:
        raise ValueError(f"{folder / 'sample.npz'}: user index out of range; another dataset?")
    items_kg = sample["items"]
    target = items_kg[:, columns.index("target")]
    out = {}
    for kind in NEGATIVES:
        pairs = Pairs(history=sample["history"], target=sample["target"], user=sample["users"],
                      item_i=target, item_j=items_kg[:, columns.index(kind)])
        found = store.lookup(pairs.user, pairs.item_i)[1] & store.lookup(pairs.user,
                                                                         pairs.item_j)[1]
        out[kind] = pairs.take(found)
    return out, store


def psj_report_judged(config, workdir: str, judge_dir: str,
                      held_out_fraction: float = HELD_OUT_FRACTION) -> dict:
    """PairAUC of stage-1 evidence vs feature evidence vs both on the judged pairs (docstring)."""
    start = time.time()
    seed = int(config.seed)
    dataset = load_configured_dataset(config)
    record = provenance(dataset.source_files, config)
    emb_nd = RewardSetup(config=config, dataset=dataset, workdir=workdir,
                         seed=seed).text_embeddings()
    ctx = context_tables(dataset, emb_nd)
    aspects_fn = functools.partial(feature_aspects, feature_tables(dataset, emb_nd))
    held_u = held_out_users(dataset.num_users, held_out_fraction, seed)
    by_kind, store = judged_pairs(judge_dir, dataset.num_users)
    parts = {}
    for kind, pairs in by_kind.items():
        if not len(pairs):
            raise ValueError(f"{judge_dir}: no judged {kind} pair (both items answered)")
        llm = store_evidence(pairs, store)
        feat = pair_evidence(pairs, aspects_fn)
        parts[kind] = {
            "held": held_u[pairs.user], "x": features_of(ctx, pairs.history),
            "llm": llm, "features": feat,
            "both": tuple(np.concatenate([a, b], axis=1) for a, b in zip(llm, feat)),
        }
    names = {"llm": [f"llm_{a}" for a in ASPECTS], "features": [f"feat_{a}" for a in ASPECTS]}
    names["both"] = names["llm"] + names["features"]
    report: dict = {
        "dataset": dataset.name, "seed": seed, "judge_dir": str(judge_dir),
        "evidence_source": store.source, "held_out_fraction": held_out_fraction,
        "sources": list(SOURCES), "aspects": names,
    }
    for kind, part in parts.items():
        report[f"pairs/{kind}"] = int(len(part["held"]))
        report[f"held_out_pairs/{kind}"] = int(part["held"].sum())
    train_x = np.concatenate([p["x"][~p["held"]] for p in parts.values()])
    report["train_pairs"] = int(len(train_x))
    for source in SOURCES:
        ev_i = np.concatenate([p[source][0][~p["held"]] for p in parts.values()])
        ev_j = np.concatenate([p[source][1][~p["held"]] for p in parts.values()])
        logging.info("%s evidence: training the aggregators on %d pairs", source, len(ev_i))
        grpo, _ = train_aggregator(train_x, ev_i, ev_j, GrpoOptions(), seed)
        bt, _ = train_bradley_terry(train_x, ev_i, ev_j, BradleyTerryOptions(), seed)
        num = ev_i.shape[1]
        for kind, part in parts.items():
            held = part["held"]
            x_h = jnp.asarray(part["x"][held])
            ev_i_h, ev_j_h = part[source][0][held], part[source][1][held]
            prefix = f"pair_auc/{source}/{kind}"
            report[f"{prefix}/uniform"] = pair_auc(np.full(num, 1 / num), ev_i_h, ev_j_h)
            for a, name in enumerate(names[source]):
                report[f"{prefix}/only_{name}"] = pair_auc(np.eye(num)[a], ev_i_h, ev_j_h)
            report[f"{prefix}/grpo"] = pair_auc(np.asarray(grpo.weights(x_h)), ev_i_h, ev_j_h)
            report[f"{prefix}/bradley_terry"] = pair_auc(np.asarray(bt.weights(x_h)), ev_i_h,
                                                         ev_j_h)
    report["seconds/total"] = time.time() - start
    report["provenance"] = record
    write_json(os.path.join(workdir, JUDGED_REPORT_FILE), report)
    return report


def print_judged(report: dict, workdir) -> None:
    print(f"PSJ stage 2 on {report['dataset']}: judged pairs of {report['judge_dir']} "
          f"({report['evidence_source']}); held-out users' pairs")
    print(f"  {'source':>8s} {'negative':>8s} {'n':>5s} {'uniform':>8s} {'grpo':>8s} "
          f"{'bt':>8s}")
    for source in SOURCES:
        for kind in NEGATIVES:
            p = f"pair_auc/{source}/{kind}"
            print(f"  {source:>8s} {kind:>8s} {report[f'held_out_pairs/{kind}']:5d} "
                  f"{report[p + '/uniform']:8.4f} {report[p + '/grpo']:8.4f} "
                  f"{report[p + '/bradley_terry']:8.4f}")
    print(f"  written to {os.path.join(workdir, JUDGED_REPORT_FILE)} in "
          f"{report['seconds/total']:.0f} s")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    workdir = as_path(_WORKDIR.value)
    if _JUDGE_DIR.value:
        report = run_or_exit(lambda: psj_report_judged(_CONFIG.value, workdir, _JUDGE_DIR.value,
                                                       _HELD_OUT.value))
        print_judged(report, workdir)
        return
    report = run_or_exit(lambda: psj_report(_CONFIG.value, workdir))
    print(f"PSJ stage 2 on {report['dataset']} (held-out users' pairs; feature evidence)")
    for negative in NEGATIVES:
        auc = {m: report[f"pair_auc/{negative}/{m}"] for m in ("uniform", "grpo", "bradley_terry")}
        print(f"  PairAUC {negative:>8s}: " + "  ".join(f"{m} {v:.4f}" for m, v in auc.items()))
    maes = "  ".join(f"{a} {report[f'distilled/mae/{a}']:.4f}" for a in ASPECTS)
    print(f"  distilled scorer MAE: {maes}; Spearman(s_hol) uniform "
          f"{report['distilled/spearman/holistic']:.4f}, GRPO weights "
          f"{report['distilled/spearman/holistic_grpo_weights']:.4f}")
    print(f"  written to {os.path.join(workdir, REPORT_FILE)} in {report['seconds/total']:.0f} s")


if __name__ == "__main__":
    run_app(main)
