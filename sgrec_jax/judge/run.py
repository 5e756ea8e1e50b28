"""PSJ stage 1, aspect evidence: judges a seeded sample of training (user, item) pairs.

Pairs: a seeded sample (`sample_ratio` of the training requests, at least one) times candidates
(the request's target and/or `negatives:N` items the user never interacted with). A pair is a
(user, item): when two sampled requests of a user share a candidate, the first request's history
is the one judged. With `log_negatives`, each sampled request also gets one negative of each
stage-2 kind (pairs.NEGATIVES: random, nearest, popular), drawn as pairs.log_pairs draws them, so
stage 2 can report PairAUC per negative kind on judged pairs (experiments/psj_report.py
--judge_dir). Before any work the job's size is printed; the llm backend also estimates the
prompt tokens, then times one real request and estimates the wall time from it and the
concurrency (`dry_run` stops after the token estimate, sending nothing). `max_seconds` bounds
the llm backend's wall time (what is answered by then is kept; rerun to continue).

After judging, the spread of the scores over each request's candidates is checked
(judge.spread): a judge giving (nearly) every candidate the same scores is logged as a WARNING
and its figures go to run.json's `score_spread`, next to the run's schema-failure rate.

Outputs in DIR/judge/ (`judge_sample`): cache.sqlite (every answer and failure, committed as it
arrives: rerunning resumes; pairs already stored are never asked again, failures only with
`retry_failed`), evidence.npz (EvidenceStore.save of the answered pairs), sample.npz (the sampled
requests: users, history, target, their candidates `items` [k, G] and the candidate `columns`'
names), run.json (settings, counts and the separation report; the API key is only ever named by its
environment variable) and config.json (the run's whole config).
"""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from absl import logging
from ml_collections import ConfigDict

from sgrec_jax.core.files import as_path, write_json, write_npz
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import Examples, leave_one_out
from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.judge.cache import JudgeCache, Record, dataset_fingerprint
from sgrec_jax.judge.defaults import JUDGE_DIR
from sgrec_jax.judge.features import FEATURES_VERSION, feature_aspects, feature_tables
from sgrec_jax.judge.llm import (
    RESPONSE_FORMATS,
    ChatClient,
    Endpoint,
    JudgeJob,
    RetryPolicy,
    run_judge,
)
from sgrec_jax.judge.pairs import NEGATIVES, log_pairs
from sgrec_jax.judge.prompt import PROMPT_VERSION, build_messages
from sgrec_jax.judge.spread import score_spread, warn_if_degenerate
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import RewardRequests, RewardSetup

BACKENDS = ("features", "llm")
_SAMPLE_STREAM = 7  # Seeds the request sample and the negatives apart from other users of seed.
_CHARS_PER_TOKEN = 4  # Rough English average, for the cost estimate only.


def parse_candidates(spec: str) -> tuple[bool, int]:
    """'target,negatives:N' -> (include the target, N negatives)."""
    target, negatives = False, 0
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if part == "target":
            target = True
        elif part.startswith("negatives:") and part[len("negatives:"):].isdigit():
            negatives = int(part[len("negatives:"):])
        else:
            raise ValueError(f"judge.candidates: bad part {part!r}; use target,negatives:N")
    if not target and negatives == 0:
        raise ValueError(f"judge.candidates {spec!r} names no candidate")
    return target, negatives


def check_settings(settings: ConfigDict) -> None:
    """Fails before any work on a bad config.judge."""
    if settings.backend not in BACKENDS:
        raise ValueError(f"judge.backend must be one of {', '.join(BACKENDS)}, "
                         f"got {settings.backend!r}")
    if settings.backend == "llm" and not (settings.base_url and settings.model):
        raise ValueError("judge.backend=llm needs judge.base_url and judge.model")
    if settings.concurrency < 1:
        raise ValueError(f"judge.concurrency must be >= 1, got {settings.concurrency}")
    if settings.max_seconds < 0:
        raise ValueError(f"judge.max_seconds must be >= 0 (0 = no limit), got "
                         f"{settings.max_seconds}")
    if settings.response_format not in RESPONSE_FORMATS:
        raise ValueError(f"judge.response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                         f"got {settings.response_format!r}")
    if not 0 < settings.sample_ratio <= 1:
        raise ValueError(f"judge.sample_ratio must be in (0, 1], got {settings.sample_ratio}")
    parse_candidates(settings.candidates)


def sample_pairs(
    dataset: SeqRecDataset, train: Examples, ratio: float, spec: str, seed: int
) -> tuple[Examples, np.ndarray]:
    """The sampled requests and their candidates int32 [k, G] (target first, then negatives)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"judge.sample_ratio must be in (0, 1], got {ratio}")
    with_target, num_negatives = parse_candidates(spec)
    rng = np.random.default_rng((seed, _SAMPLE_STREAM))
    k = max(1, round(ratio * len(train)))
    rows = np.sort(rng.choice(len(train), size=k, replace=False))
    sample = Examples(train.history[rows], train.target[rows], train.user[rows])
    columns = [sample.target[:, None]] if with_target else []
    if num_negatives:
        negatives = np.empty((k, num_negatives), np.int32)
        for r, user in enumerate(sample.user):
            seen = set(dataset.sequences[user].tolist())
            if dataset.num_items - len(seen) < num_negatives:
                raise ValueError(f"user {user} leaves fewer than {num_negatives} negatives")
            chosen: list[int] = []
            while len(chosen) < num_negatives:
                item = int(rng.integers(dataset.num_items))
                if item not in seen:
                    seen.add(item)
                    chosen.append(item)
            negatives[r] = chosen
        columns.append(negatives)
    return sample, np.concatenate(columns, axis=1).astype(np.int32)


def candidate_columns(spec: str, log_negatives: bool) -> list[str]:
    """The names of sample_pairs' (+ with_log_negatives') candidate columns."""
    with_target, num_negatives = parse_candidates(spec)
    return ((["target"] if with_target else []) + ["negative"] * num_negatives
            + (list(NEGATIVES) if log_negatives else []))


def with_log_negatives(
    dataset: SeqRecDataset, sample: Examples, items_kg: np.ndarray, seed: int,
    emb_nd: np.ndarray,
) -> np.ndarray:
    """items_kg with one column per stage-2 negative kind (pairs.NEGATIVES) appended, each drawn
    by pairs.log_pairs for the sampled requests (emb_nd: item embeddings, for "nearest")."""
    extra = [log_pairs(dataset, sample, negative=kind, seed=seed, emb_nd=emb_nd).item_j
             for kind in NEGATIVES]
    return np.concatenate([items_kg, np.stack(extra, axis=1)], axis=1).astype(np.int32)


def first_occurrences(sample: Examples, items_kg: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) of each distinct (user, item) pair's first occurrence, in order."""
    seen: set[tuple[int, int]] = set()
    out = []
    for r, user in enumerate(sample.user.tolist()):
        for c, item in enumerate(items_kg[r].tolist()):
            if (user, item) not in seen:
                seen.add((user, item))
                out.append((r, c))
    return out


def judge_features(
    config: ConfigDict, dataset: SeqRecDataset, workdir: Any, cache: JudgeCache,
    sample: Examples, items_kg: np.ndarray,
) -> tuple[str, dict]:
    """Feature evidence of the sampled pairs not yet cached; returns (model name, counts)."""
    setup = RewardSetup(config=config, dataset=dataset, workdir=workdir, seed=config.seed)
    # The SIDs' text space ("text" or "sentence_encoder"; RewardSetup.text_embeddings); the
    # cache's model name keeps its pre-source spelling for "text".
    source = setup.text_source()
    x_nd = setup.text_embeddings(source=source)
    prefix = "text_emb" if source == "text" else f"{source}_emb"
    model = f"features:{prefix}_{x_nd.shape[1]}"
    tables = feature_tables(dataset, x_nd)
    stored = cache.statuses(model, FEATURES_VERSION)
    todo = [(r, c) for r, c in first_occurrences(sample, items_kg)
            if (int(sample.user[r]), int(items_kg[r, c])) not in stored]
    print(f"judge (features): {len(todo)} pairs to score, {len(stored)} already cached")
    aspects = jax.jit(feature_aspects)
    wanted: dict[int, list[int]] = {}
    for r, c in todo:
        wanted.setdefault(r, []).append(c)
    rows = sorted(wanted)
    batch = max(1, config.judge.batch_size)
    start = time.perf_counter()
    for lo in range(0, len(rows), batch):
        idx = np.array(rows[lo: lo + batch])
        # Pad the last batch to the full size so jit compiles once.
        pad = np.concatenate([idx, np.full(batch - len(idx), idx[0])])
        part = Examples(sample.history[pad], sample.target[pad], sample.user[pad])
        evidence = np.asarray(aspects(tables, RewardRequests.from_examples(part), items_kg[pad]))
        records = [
            Record(user=int(sample.user[r]), item=int(items_kg[r, c]),
                   scores=tuple(evidence[j, c].tolist()), attempts=0,
                   context=tuple(int(h) for h in sample.history[r] if h >= 0))
            for j, r in enumerate(idx) for c in wanted[r]
        ]
        cache.put_many(model, FEATURES_VERSION, records)
        logging.info("judge (features): %d/%d requests, %.1fs", min(lo + batch, len(rows)),
                     len(rows), time.perf_counter() - start)
    return model, {"scored": len(todo), "cached_before": len(stored)}


def judge_llm(
    settings: ConfigDict, seed: int, dataset: SeqRecDataset, cache: JudgeCache,
    sample: Examples, items_kg: np.ndarray,
) -> tuple[str, dict]:
    """Asks the endpoint about the sampled pairs not yet cached; returns (model, counts)."""
    endpoint = Endpoint(
        base_url=settings.base_url, model=settings.model, api_key_env=settings.api_key_env,
        timeout_s=settings.timeout_s, max_tokens=settings.max_tokens,
        response_format=settings.response_format,
    )
    retry = RetryPolicy(max_attempts=settings.max_attempts, seed=seed)
    docs: dict[int, str] = {}

    def doc(i: int) -> str:
        if i not in docs:
            docs[i] = dataset.items.document(i)
        return docs[i]

    jobs = []
    for r, c in first_occurrences(sample, items_kg):
        history = [int(h) for h in sample.history[r] if h >= 0]
        item = int(items_kg[r, c])
        messages = build_messages([doc(h) for h in history], doc(item))
        jobs.append(JudgeJob(int(sample.user[r]), item, tuple(messages), tuple(history)))
    stored = cache.statuses(endpoint.model, PROMPT_VERSION)
    skip = {"ok"} if settings.retry_failed else {"ok", "failed"}
    todo = [j for j in jobs if stored.get((j.user, j.item)) not in skip]
    chars = sum(len(m["content"]) for j in todo for m in j.messages)
    print(f"judge (llm {endpoint.model} @ {endpoint.base_url}): {len(jobs)} pairs, "
          f"{len(jobs) - len(todo)} cached, {len(todo)} to ask; about "
          f"{chars // _CHARS_PER_TOKEN:,} prompt tokens (chars/{_CHARS_PER_TOKEN}) and at most "
          f"{len(todo) * endpoint.max_tokens:,} answer tokens, before retries")
    if settings.dry_run or not todo:
        return endpoint.model, {"pairs": len(jobs), "to_ask": len(todo)}
    budget = settings.max_requests or None
    deadline = time.monotonic() + settings.max_seconds if settings.max_seconds else None
    last_log = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_log[0] >= 10 or done == total:
            last_log[0] = now
            rate = done / max(now - start, 1e-9)
            logging.info("judge (llm): %d/%d pairs, %.2f pairs/s, ETA %.0fs", done, total, rate,
                         (total - done) / max(rate, 1e-9))

    def seconds_left() -> float | None:
        return None if deadline is None else max(1e-3, deadline - time.monotonic())

    with ChatClient(endpoint) as client:
        first = run_judge(cache, client, todo[:1], retry, concurrency=1, max_requests=budget,
                          max_seconds=seconds_left(), retry_failed=settings.retry_failed)
        latency = max(first.seconds, 1e-3)
        eta = latency * (len(todo) - 1) / settings.concurrency
        print(f"judge (llm): first pair took {latency:.2f}s; the remaining {len(todo) - 1} at "
              f"concurrency {settings.concurrency}: about {eta:.0f}s ({eta / 3600:.2f} h) if the "
              "server keeps up")
        last_log[0] = start = time.perf_counter()
        rest = run_judge(
            cache, client, todo[1:], retry, concurrency=settings.concurrency,
            max_requests=None if budget is None else max(0, budget - first.http_requests),
            max_seconds=seconds_left(), retry_failed=settings.retry_failed, progress=progress,
        )
    totals = {
        field: getattr(first, field) + getattr(rest, field)
        for field in ("answered", "failed", "http_requests", "malformed_answers",
                      "prompt_tokens", "completion_tokens", "seconds")
    }
    totals.update(
        pairs=len(jobs), unfinished=rest.unfinished + first.unfinished,
        budget_exhausted=rest.budget_exhausted or first.budget_exhausted,
        first_pair_seconds=round(first.seconds, 3), estimated_seconds=round(eta, 1),
        response_format=endpoint.response_format, concurrency=settings.concurrency,
    )
    requests = totals["http_requests"]
    totals["schema_failure_rate"] = (round(totals["malformed_answers"] / requests, 4)
                                     if requests else None)
    totals["judgments_per_s"] = round(totals["answered"] / max(totals["seconds"], 1e-9), 3)
    print(f"judge (llm): {totals['answered']} answered, {totals['failed']} failed in "
          f"{totals['seconds']:.0f}s ({totals['judgments_per_s']:.2f} judgments/s); "
          f"{requests} requests, schema-failure rate {totals['schema_failure_rate']} "
          f"({totals['malformed_answers']} answers failed validation; response_format "
          f"{endpoint.response_format})")
    if totals["budget_exhausted"]:
        print(f"judge (llm): request or time budget spent; {totals['unfinished']} pairs left "
              "for a later run (rerun the same command)")
    return endpoint.model, totals


def separation(
    store: EvidenceStore, sample: Examples, items_kg: np.ndarray, with_target: bool
) -> dict:
    """Per aspect: mean evidence, missing fraction and, with the target in column 0
    (`with_target`), how often the target beats a negative of its request (ties count half;
    pairs with NaN are left out)."""
    users_kg = np.broadcast_to(sample.user[:, None], items_kg.shape)
    evidence, found = store.lookup(users_kg, items_kg)
    evidence = evidence.reshape(*items_kg.shape, -1)
    out = {
        "aspects": list(ASPECTS),
        "evidence_mean": np.nanmean(store.evidence_na, axis=0).astype(float).round(4).tolist(),
        "evidence_missing_frac": np.isnan(store.evidence_na).mean(axis=0).round(4).tolist(),
        "sample_pairs_found_frac": round(float(found.mean()), 4),
    }
    if with_target and items_kg.shape[1] > 1:
        target, negatives = evidence[:, :1], evidence[:, 1:]
        both = np.isfinite(target) & np.isfinite(negatives)
        wins = (target > negatives) + 0.5 * (target == negatives)
        out["target_beats_negative"] = [
            round(float(wins[..., a][both[..., a]].mean()), 4) if both[..., a].any() else None
            for a in range(len(ASPECTS))
        ]
    return out


def judge_sample(config: ConfigDict, dataset: SeqRecDataset, workdir: Any) -> dict[str, Any]:
    """Judges the sample that config.judge describes and writes DIR/judge/; returns run.json's
    content."""
    settings = config.judge
    check_settings(settings)
    judge_dir = as_path(workdir) / JUDGE_DIR
    judge_dir.mkdir(parents=True, exist_ok=True)
    write_json(judge_dir / "config.json", config.to_dict())
    train = leave_one_out(dataset, config.data.max_history).train
    sample, items_kg = sample_pairs(dataset, train, settings.sample_ratio, settings.candidates,
                                    config.seed)
    if settings.log_negatives:
        setup = RewardSetup(config=config, dataset=dataset, workdir=as_path(workdir),
                            seed=config.seed)
        items_kg = with_log_negatives(dataset, sample, items_kg, config.seed,
                                      setup.text_embeddings())
    columns = candidate_columns(settings.candidates, settings.log_negatives)
    write_npz(judge_dir / "sample.npz", users=sample.user, history=sample.history,
              target=sample.target, items=items_kg, columns=np.array(columns))
    print(f"judge: {dataset.name}, {len(sample)} of {len(train)} training requests "
          f"x {items_kg.shape[1]} candidates ({settings.candidates})")
    with JudgeCache(judge_dir / "cache.sqlite",
                    fingerprint=dataset_fingerprint(dataset)) as cache:
        if settings.backend == "features":
            model, counts = judge_features(config, dataset, as_path(workdir), cache, sample,
                                           items_kg)
            version = FEATURES_VERSION
        else:
            model, counts = judge_llm(settings, config.seed, dataset, cache, sample, items_kg)
            version = PROMPT_VERSION
        store = EvidenceStore.from_cache(cache, model, version)
        cached = cache.counts(model, version)
    store.save(judge_dir / "evidence.npz")
    summary = {
        "dataset": dataset.name, "backend": settings.backend, "model": model,
        "version": version, "sample_ratio": settings.sample_ratio,
        "candidates": settings.candidates, "sampled_requests": len(sample),
        "training_requests": len(train), "stored_answers": cached["ok"],
        "stored_failures": cached["failed"], "run": counts,
        "api_key_env": settings.api_key_env if settings.backend == "llm" else None,
    }
    if len(store):
        with_target = parse_candidates(settings.candidates)[0]
        summary.update(separation(store, sample, items_kg, with_target))
    users_kg = np.broadcast_to(sample.user[:, None], items_kg.shape)
    evidence_kga = store.lookup(users_kg, items_kg)[0].reshape(*items_kg.shape, -1)
    summary["score_spread"] = score_spread(evidence_kga)
    warn_if_degenerate(summary["score_spread"], f"{settings.backend} {model}")
    write_json(judge_dir / "run.json", summary)
    return summary
