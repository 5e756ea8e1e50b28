"""The "psj" reward channel: the Personalized Semantic Judge's holistic score.

    s_hol(x, item) = w(x)^T s(x, item)     range [0, 1], kind "semantic"

w(x): the stage-2 aggregator's expected weights ("grpo", default), the Bradley-Terry head's
("bradley_terry") or uniform ("uniform"), from the request's context features (judge.context).
s(x, item): stage-1 evidence from the feature backend ("features", default: judge.features) or
the distilled scorer ("distilled": judge.distill), so every candidate the policy samples is
scored. Missing aspects are renormalised away (holistic.py). NaN where requests.judged_b is False
(sparse judging) and for padding candidates.

Where the models learn from:
  no `evidence_store` (default): log pairs of the training split (target vs `negatives`) with
    feature evidence; the distilled scorer learns the feature backend.
  `evidence_store` = an evidence.npz of experiments/judge.py (judge.store; e.g. LLM answers):
    the aggregator trains on the pairs the store covers (each stored target over its user's
    stored negatives, judge.pairs.store_pairs) with the stored evidence, and the distilled scorer
    distils the stored evidence, so it scores the candidates the judge never saw. Needs
    evidence="distilled": the RL policy's candidates are not in the store.

Needs the items' text (embeddings from `RewardSetup.text_embeddings`, options `dim` and
`text_source`, as emb_cosine's: "text" or "sentence_encoder", None = the SIDs' text source).
The models are trained on the config's mesh (config.mesh) the first time and cached under
workdir/judge/aggregator/ and workdir/judge/scorer/, keyed by a hash of everything they depend
on (the store by its file's sha256).

sgrec_jax/registration.py registers the channel with its options (judge/defaults.py) beside the
rewards package's own; the rewards package cannot import the judge, a later layer.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from etils import epath
from flax import nnx
from jax.sharding import Mesh

from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.dataset import file_sha256
from sgrec_jax.data.errors import DataFormatError
from sgrec_jax.data.split import Examples, leave_one_out
from sgrec_jax.judge.aggregator import AspectPolicy, GrpoOptions, train_aggregator
from sgrec_jax.judge.aspects import NUM_ASPECTS
from sgrec_jax.judge.bradley_terry import (
    BradleyTerryHead,
    BradleyTerryOptions,
    train_bradley_terry,
)
from sgrec_jax.judge.context import (
    ContextTables,
    context_features,
    context_tables,
    features_of,
)
from sgrec_jax.judge.defaults import JUDGE_DIR
from sgrec_jax.judge.distill import (
    DistilledScorer,
    DistillOptions,
    agreement,
    distilled_aspects,
    evidence_rows,
    predict_rows,
    train_distilled,
)
from sgrec_jax.judge.features import feature_aspects, feature_tables
from sgrec_jax.judge.fitting import FitOptions, restore_params, save_params
from sgrec_jax.judge.holistic import holistic_score
from sgrec_jax.judge.pairs import (
    NEGATIVES,
    Pairs,
    log_pairs,
    pair_evidence,
    store_pairs,
    store_requests,
)
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import (
    RewardChannel,
    RewardRequests,
    RewardSetup,
    nan_where_padding,
)

AGGREGATORS = ("grpo", "bradley_terry", "uniform")
EVIDENCE = ("features", "distilled")


def _check(options: Mapping[str, Any]) -> None:
    if options["aggregator"] not in AGGREGATORS:
        raise ValueError(f"psj aggregator must be one of {AGGREGATORS}, got "
                         f"{options['aggregator']!r}")
    if options["evidence"] not in EVIDENCE:
        raise ValueError(f"psj evidence must be one of {EVIDENCE}, got {options['evidence']!r}")
    if options["evidence_store"] and options["evidence"] != "distilled":
        raise ValueError("psj evidence_store needs evidence='distilled': the policy's candidates "
                         "are not in the store, so a scorer distilled from it scores them")
    negatives = tuple(options["negatives"])
    if not negatives or any(n not in NEGATIVES for n in negatives):
        raise ValueError(f"psj negatives must be a non-empty subset of {NEGATIVES}, got "
                         f"{negatives!r}")


def _cache_path(setup: RewardSetup, emb_nd: np.ndarray, folder: str, name: str,
                settings: Mapping[str, Any]) -> str:
    """workdir/judge/<folder>/<name>_<key>.npz, key = hash of what the model depends on."""
    everything = {**settings, "dataset": setup.dataset.name, "num_items": setup.dataset.num_items,
                  "num_users": setup.dataset.num_users, "seed": setup.seed,
                  "max_history": int(setup.config.data.max_history),
                  "embeddings": hashlib.sha256(np.ascontiguousarray(emb_nd)).hexdigest()}
    key = hashlib.sha256(json.dumps(everything, sort_keys=True, default=list).encode())
    return os.path.join(setup.workdir, JUDGE_DIR, folder, f"{name}_{key.hexdigest()[:16]}.npz")


def training_pairs(setup: RewardSetup, emb_nd: np.ndarray, negatives: tuple[str, ...]
                   ) -> tuple[Pairs, np.ndarray, np.ndarray]:
    """Log pairs of every training request, one per negative kind, with feature evidence."""
    examples = leave_one_out(setup.dataset, max_history=setup.config.data.max_history).train
    pairs = Pairs.concat([log_pairs(setup.dataset, examples, negative=n, seed=setup.seed,
                                    emb_nd=emb_nd) for n in negatives])
    aspects_fn = functools.partial(feature_aspects, feature_tables(setup.dataset, emb_nd))
    ev_i, ev_j = pair_evidence(pairs, aspects_fn)
    return pairs, ev_i, ev_j


def load_evidence_store(setup: RewardSetup, path: str) -> EvidenceStore:
    """The store at `path`, checked against the dataset (DataFormatError naming the file)."""
    store = EvidenceStore.load(path)
    for name, index_n, bound in (("users", store.users_n, setup.dataset.num_users),
                                 ("items", store.items_n, setup.dataset.num_items)):
        bad = np.flatnonzero(index_n >= bound)
        if bad.size:
            raise DataFormatError(path, f"field {name!r} row {bad[0]}: {index_n[bad[0]]} is "
                                        f"outside the dataset's [0, {bound})")
    if not len(store):
        raise DataFormatError(path, "the evidence store is empty")
    return store


class _TrainingData:
    """What the psj models train on, computed once on first use: the aggregator's preference
    pairs (x, pairs, ev_i, ev_j) and the distilled scorer's rows (x, items, evidence).

    Without a store: log pairs of the training split with feature evidence, and both items of
    each pair as scorer rows. With a store: the pairs it covers (judge.pairs.store_pairs) and
    every stored pair whose request can be recovered, with the stored evidence.
    """

    def __init__(self, setup: RewardSetup, emb_nd: np.ndarray, ctx: ContextTables,
                 negatives: tuple[str, ...], store: EvidenceStore | None):
        self.setup, self.emb_nd, self.ctx = setup, emb_nd, ctx
        self.negatives, self.store = negatives, store

    @functools.cached_property
    def train(self) -> Examples:
        return leave_one_out(self.setup.dataset,
                             max_history=self.setup.config.data.max_history).train

    @functools.cached_property
    def pairs(self) -> tuple[np.ndarray, Pairs, np.ndarray, np.ndarray]:
        if self.store is None:
            pairs, ev_i, ev_j = training_pairs(self.setup, self.emb_nd, self.negatives)
        else:
            pairs, ev_i, ev_j = store_pairs(self.store, self.setup.dataset, self.train)
            if not len(pairs):
                raise ValueError("psj evidence_store: no stored target has a stored negative of "
                                 "its user (judge with "
                                 "--config.judge.candidates=target,negatives:N)")
        return features_of(self.ctx, pairs.history), pairs, ev_i, ev_j

    @functools.cached_property
    def scorer_rows(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.store is None:
            x, pairs, ev_i, ev_j = self.pairs
            return evidence_rows(x, pairs.item_i, pairs.item_j, ev_i, ev_j)
        request = store_requests(self.store, self.setup.dataset, self.train)
        known = request >= 0
        logging.info("psj: %d of %d stored pairs have a recoverable request", known.sum(),
                     len(known))
        return (features_of(self.ctx, self.train.history[request[known]]),
                self.store.items_n[known], self.store.evidence_na[known])


def psj_models(setup: RewardSetup, options: Mapping[str, Any]
               ) -> tuple[nnx.Module | None, DistilledScorer | None]:
    """(aggregator or None for "uniform", scorer or None for "features"), restored from the
    cache or trained on the configured mesh and cached."""
    _check(options)
    store = (load_evidence_store(setup, options["evidence_store"])
             if options["evidence_store"] else None)
    emb_nd = setup.text_embeddings(dim=options["dim"], source=options["text_source"])
    ctx = context_tables(setup.dataset, emb_nd)
    negatives = tuple(options["negatives"])
    mesh = make_mesh(data=setup.config.mesh.data, fsdp=setup.config.mesh.fsdp)
    data = _TrainingData(setup, emb_nd, ctx, negatives, store)
    source: dict[str, Any] = {"negatives": negatives}
    if store is not None:
        source["evidence_store"] = file_sha256(options["evidence_store"])
    fit_options = FitOptions(num_batches=options["num_batches"], batch_size=256,
                             updates_per_batch=2 if options["aggregator"] == "grpo" else 1)
    wanted = []  # (path, model skeleton, train() -> model)
    if options["aggregator"] == "grpo":
        grpo = GrpoOptions(group_size=options["group_size"], fit=fit_options)
        wanted.append((
            _cache_path(setup, emb_nd, "aggregator", "grpo", {**source, "grpo": repr(grpo)}),
            AspectPolicy(ctx.dim, num_aspects=NUM_ASPECTS, hidden=grpo.hidden,
                         rngs=nnx.Rngs(setup.seed)),
            lambda: train_aggregator(*_pair_arrays(data), grpo, setup.seed, mesh=mesh)[0],
        ))
    elif options["aggregator"] == "bradley_terry":
        bt = BradleyTerryOptions(fit=fit_options)
        wanted.append((
            _cache_path(setup, emb_nd, "aggregator", "bradley_terry", {**source, "bt": repr(bt)}),
            BradleyTerryHead(ctx.dim, num_aspects=NUM_ASPECTS, hidden=bt.hidden,
                             rngs=nnx.Rngs(setup.seed)),
            lambda: train_bradley_terry(*_pair_arrays(data), bt, setup.seed, mesh=mesh)[0],
        ))
    else:
        wanted.append((None, None, None))
    if options["evidence"] == "distilled":
        distill = DistillOptions(fit=FitOptions(num_batches=options["distill_batches"],
                                                batch_size=512))
        wanted.append((
            _cache_path(setup, emb_nd, "scorer", "distilled",
                        {**source, "distill": repr(distill)}),
            DistilledScorer(ctx.dim, emb_nd.shape[1], num_aspects=NUM_ASPECTS,
                            hidden=distill.hidden, rngs=nnx.Rngs(setup.seed)),
            lambda: _train_scorer(data, distill, setup.seed, mesh),
        ))
    else:
        wanted.append((None, None, None))

    models = []
    for path, skeleton, train in wanted:
        if path is None:
            models.append(None)
        elif epath.Path(path).exists():
            logging.info("psj: reusing %s", path)
            models.append(restore_params(path, skeleton))
        else:
            logging.info("psj: training %s", os.path.basename(path))
            model = train()
            save_params(path, model)
            models.append(model)
    return models[0], models[1]


def _pair_arrays(data: _TrainingData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, pairs, ev_i, ev_j = data.pairs
    logging.info("psj: aggregator on %d preference pairs", len(pairs))
    return x, ev_i, ev_j


def _train_scorer(data: _TrainingData, options: DistillOptions, seed: int, mesh: Mesh
                  ) -> DistilledScorer:
    """The distilled scorer, and how closely it reproduces the evidence it was trained on."""
    x, items, evidence = data.scorer_rows
    scorer = train_distilled(x, items, evidence, data.emb_nd, options, seed, mesh=mesh)[0]
    agree = agreement(predict_rows(scorer, x, items, data.emb_nd), evidence)
    logging.info("psj: distilled scorer on %d rows, training agreement %s", len(items), agree)
    return scorer


def _psj_score(graphdefs: tuple[Any, Any], tables: dict[str, Any], requests: RewardRequests,
               items_bg: jax.Array, logprob_bg: jax.Array) -> jax.Array:
    del logprob_bg
    aggregator_def, scorer_def = graphdefs
    x_bf = context_features(tables["context"], requests.history_bh)
    if aggregator_def is None:
        w_ba = jnp.full((x_bf.shape[0], NUM_ASPECTS), 1.0 / NUM_ASPECTS, jnp.float32)
    else:
        w_ba = nnx.merge(aggregator_def, tables["aggregator"]).weights(x_bf)
    if scorer_def is None:
        ev_bga = feature_aspects(tables["features"], requests, items_bg)
    else:
        scorer = nnx.merge(scorer_def, tables["scorer"])
        ev_bga = distilled_aspects(scorer, x_bf, tables["context"].emb_nd, items_bg)
    s_bg = jnp.clip(holistic_score(w_ba[:, None, :], ev_bga), 0.0, 1.0)
    s_bg = jnp.where(requests.judged_b[:, None], s_bg, jnp.nan)
    return nan_where_padding(s_bg, items_bg)


def build_psj(setup: RewardSetup, options: Mapping[str, Any]) -> RewardChannel:
    """The "psj" channel; options: evidence, aggregator, negatives (log-pair negatives the
    aggregator trains on), group_size and num_batches (its GRPO/BT training), distill_batches
    (the distilled scorer's), dim (text embedding width; None = the config's), text_source
    (item-text embedding source; None = the config's SIDs'), evidence_store (path of a stage-1
    evidence.npz to learn from instead of feature evidence; "" = none).
    Defaults: judge/defaults.py."""
    aggregator, scorer = psj_models(setup, options)
    emb_nd = setup.text_embeddings(dim=options["dim"], source=options["text_source"])
    tables: dict[str, Any] = {"context": context_tables(setup.dataset, emb_nd)}
    graphdefs: list[Any] = [None, None]
    if aggregator is not None:
        graphdefs[0], tables["aggregator"] = nnx.split(aggregator)
    if scorer is not None:
        graphdefs[1], tables["scorer"] = nnx.split(scorer)
    else:
        tables["features"] = feature_tables(setup.dataset, emb_nd)
    score_fn = functools.partial(_psj_score, tuple(graphdefs))
    return RewardChannel("psj", 0.0, 1.0, "semantic", tables, score_fn)
