r"""Runs the PSJ judge (stage 1, aspect evidence) over a seeded sample of training requests.

    python -m experiments.judge --config=experiments/configs/scientific_sids.py --workdir=DIR \
        --backend=features [--sample_ratio=0.05 --candidates=target,negatives:4]
    python -m experiments.judge --config=... --workdir=DIR --backend=llm \
        --base_url=http://127.0.0.1:8000/v1 --model=qwen2.5-7b-instruct \
        [--api_key_env=OPENAI_API_KEY --concurrency=8 --max_requests=20000 --dry_run]

Pairs: a seeded sample (`sample_ratio` of the training requests, at least one) times candidates
(the request's target and/or `negatives:N` items the user never interacted with). A pair is a
(user, item): when two sampled requests of a user share a candidate, the first request's history
is the one judged. Before any work it prints the size of the job; the llm backend also estimates
the prompt tokens, then times one real request and estimates the wall time from it and the
concurrency (`--dry_run` stops after the token estimate, sending nothing).

Outputs in DIR/judge/: cache.sqlite (every answer and failure, committed as it arrives: rerun the
same command to resume; pairs already stored are never asked again, failures only with
--retry_failed), evidence.npz (EvidenceStore.save of the answered pairs) and run.json (settings
and counts; the API key is only ever named by its environment variable).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from sgrec_jax.core.files import as_path, write_json
from sgrec_jax.data.dataset import SeqRecDataset
from sgrec_jax.data.split import Examples, leave_one_out
from sgrec_jax.judge.aspects import ASPECTS
from sgrec_jax.judge.cache import JudgeCache, Record, dataset_fingerprint
from sgrec_jax.judge.features import FEATURES_VERSION, feature_aspects, feature_tables
from sgrec_jax.judge.llm import ChatClient, Endpoint, JudgeJob, RetryPolicy, run_judge
from sgrec_jax.judge.prompt import PROMPT_VERSION, build_messages
from sgrec_jax.judge.store import EvidenceStore
from sgrec_jax.rewards.channel import RewardRequests, RewardSetup
from sgrec_jax.stages.cli import quiet_library_logs, run_app, run_or_exit
from sgrec_jax.stages.pipeline import load_configured_dataset

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (experiments/configs/*.py[:arg]).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory (outputs go to DIR/judge/).")
_BACKEND = flags.DEFINE_enum("backend", "features", ["features", "llm"], "Evidence backend.")
_SAMPLE_RATIO = flags.DEFINE_float("sample_ratio", 0.05, "Fraction of training requests judged.")
_CANDIDATES = flags.DEFINE_string(
    "candidates", "target,negatives:4", "Candidates per request: target and/or negatives:N."
)
_BASE_URL = flags.DEFINE_string("base_url", "", "llm: OpenAI-compatible base URL (…/v1).")
_MODEL = flags.DEFINE_string("model", "", "llm: the served model's name.")
_API_KEY_ENV = flags.DEFINE_string(
    "api_key_env", "OPENAI_API_KEY", "llm: NAME of the environment variable with the API key."
)
_CONCURRENCY = flags.DEFINE_integer("concurrency", 8, "llm: requests in flight at most.")
_MAX_REQUESTS = flags.DEFINE_integer("max_requests", 0, "llm: HTTP request budget; 0 = none.")
_TIMEOUT_S = flags.DEFINE_float("timeout_s", 60.0, "llm: per-request timeout in seconds.")
_MAX_ATTEMPTS = flags.DEFINE_integer("max_attempts", 4, "llm: attempts per pair.")
_MAX_TOKENS = flags.DEFINE_integer("max_tokens", 256, "llm: answer length cap in tokens.")
_RETRY_FAILED = flags.DEFINE_bool("retry_failed", False, "llm: ask again for stored failures.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "llm: print the estimate and send nothing.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "features: requests per jitted batch.")
flags.mark_flags_as_required(["config", "workdir"])

JUDGE_DIR = "judge"
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
            raise ValueError(f"--candidates: bad part {part!r}; use target,negatives:N")
    if not target and negatives == 0:
        raise ValueError(f"--candidates {spec!r} names no candidate")
    return target, negatives


def sample_pairs(
    dataset: SeqRecDataset, train: Examples, ratio: float, spec: str, seed: int
) -> tuple[Examples, np.ndarray]:
    """The sampled requests and their candidates int32 [k, G] (target first, then negatives)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"--sample_ratio must be in (0, 1], got {ratio}")
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


def judge_features(config, dataset, workdir, cache, sample, items_kg) -> tuple[str, dict]:
    """Feature evidence of the sampled pairs not yet cached; returns (model name, counts)."""
    setup = RewardSetup(config=config, dataset=dataset, workdir=workdir, seed=config.seed)
    x_nd = setup.text_embeddings()
    model = f"features:text_emb_{x_nd.shape[1]}"
    tables = feature_tables(dataset, x_nd)
    stored = cache.statuses(model, FEATURES_VERSION)
    todo = [(r, c) for r, c in first_occurrences(sample, items_kg)
            if (int(sample.user[r]), int(items_kg[r, c])) not in stored]
    print(f"judge (features): {len(todo)} pairs to score, {len(stored)} already cached")
    aspects = jax.jit(feature_aspects)
    wanted = {}
    for r, c in todo:
        wanted.setdefault(r, []).append(c)
    rows = sorted(wanted)
    batch = max(1, _BATCH_SIZE.value)
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


def judge_llm(dataset, cache, sample, items_kg) -> tuple[str, dict]:
    """Asks the endpoint about the sampled pairs not yet cached; returns (model, counts)."""
    endpoint = Endpoint(
        base_url=_BASE_URL.value, model=_MODEL.value, api_key_env=_API_KEY_ENV.value,
        timeout_s=_TIMEOUT_S.value, max_tokens=_MAX_TOKENS.value,
    )
    retry = RetryPolicy(max_attempts=_MAX_ATTEMPTS.value, seed=_CONFIG.value.seed)
    docs = {}

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
    skip = {"ok"} if _RETRY_FAILED.value else {"ok", "failed"}
    todo = [j for j in jobs if stored.get((j.user, j.item)) not in skip]
    chars = sum(len(m["content"]) for j in todo for m in j.messages)
    print(f"judge (llm {endpoint.model} @ {endpoint.base_url}): {len(jobs)} pairs, "
          f"{len(jobs) - len(todo)} cached, {len(todo)} to ask; about "
          f"{chars // _CHARS_PER_TOKEN:,} prompt tokens (chars/{_CHARS_PER_TOKEN}) and at most "
          f"{len(todo) * endpoint.max_tokens:,} answer tokens, before retries")
    if _DRY_RUN.value or not todo:
        return endpoint.model, {"pairs": len(jobs), "to_ask": len(todo)}
    budget = _MAX_REQUESTS.value or None
    last_log = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last_log[0] >= 10 or done == total:
            last_log[0] = now
            rate = done / max(now - start, 1e-9)
            logging.info("judge (llm): %d/%d pairs, %.2f pairs/s, ETA %.0fs", done, total, rate,
                         (total - done) / max(rate, 1e-9))

    with ChatClient(endpoint) as client:
        first = run_judge(cache, client, todo[:1], retry, concurrency=1, max_requests=budget,
                          retry_failed=_RETRY_FAILED.value)
        latency = max(first.seconds, 1e-3)
        eta = latency * (len(todo) - 1) / _CONCURRENCY.value
        print(f"judge (llm): first pair took {latency:.2f}s; the remaining {len(todo) - 1} at "
              f"concurrency {_CONCURRENCY.value}: about {eta:.0f}s ({eta / 3600:.2f} h) if the "
              "server keeps up")
        last_log[0] = start = time.perf_counter()
        rest = run_judge(
            cache, client, todo[1:], retry, concurrency=_CONCURRENCY.value,
            max_requests=None if budget is None else max(0, budget - first.http_requests),
            retry_failed=_RETRY_FAILED.value, progress=progress,
        )
    totals = {
        field: getattr(first, field) + getattr(rest, field)
        for field in ("answered", "failed", "http_requests", "prompt_tokens",
                      "completion_tokens", "seconds")
    }
    totals.update(pairs=len(jobs), unfinished=rest.unfinished + first.unfinished,
                  budget_exhausted=rest.budget_exhausted or first.budget_exhausted)
    if totals["budget_exhausted"]:
        print(f"judge (llm): request budget spent; {totals['unfinished']} pairs left for a "
              "later run (rerun the same command)")
    return endpoint.model, totals


def separation(store: EvidenceStore, sample: Examples, items_kg: np.ndarray) -> dict:
    """Per aspect: mean evidence, missing fraction and, with the target in column 0, how often
    the target beats a negative of its request (ties count half; pairs with NaN are left out)."""
    users_kg = np.broadcast_to(sample.user[:, None], items_kg.shape)
    evidence, found = store.lookup(users_kg, items_kg)
    evidence = evidence.reshape(*items_kg.shape, -1)
    out = {
        "aspects": list(ASPECTS),
        "evidence_mean": np.nanmean(store.evidence_na, axis=0).astype(float).round(4).tolist(),
        "evidence_missing_frac": np.isnan(store.evidence_na).mean(axis=0).round(4).tolist(),
        "sample_pairs_found_frac": round(float(found.mean()), 4),
    }
    if parse_candidates(_CANDIDATES.value)[0] and items_kg.shape[1] > 1:
        target, negatives = evidence[:, :1], evidence[:, 1:]
        both = np.isfinite(target) & np.isfinite(negatives)
        wins = (target > negatives) + 0.5 * (target == negatives)
        out["target_beats_negative"] = [
            round(float(wins[..., a][both[..., a]].mean()), 4) if both[..., a].any() else None
            for a in range(len(ASPECTS))
        ]
    return out


def run(config, workdir: str) -> dict:
    workdir = as_path(workdir)
    judge_dir = os.path.join(workdir, JUDGE_DIR)
    if _BACKEND.value == "llm" and not (_BASE_URL.value and _MODEL.value):
        raise ValueError("--backend=llm needs --base_url and --model")
    if _CONCURRENCY.value < 1:
        raise ValueError(f"--concurrency must be >= 1, got {_CONCURRENCY.value}")
    dataset = load_configured_dataset(config)
    train = leave_one_out(dataset, config.data.max_history).train
    sample, items_kg = sample_pairs(dataset, train, _SAMPLE_RATIO.value, _CANDIDATES.value,
                                    config.seed)
    print(f"judge: {dataset.name}, {len(sample)} of {len(train)} training requests "
          f"x {items_kg.shape[1]} candidates ({_CANDIDATES.value})")
    with JudgeCache(os.path.join(judge_dir, "cache.sqlite"),
                    fingerprint=dataset_fingerprint(dataset)) as cache:
        if _BACKEND.value == "features":
            model, counts = judge_features(config, dataset, workdir, cache, sample, items_kg)
            version = FEATURES_VERSION
        else:
            model, counts = judge_llm(dataset, cache, sample, items_kg)
            version = PROMPT_VERSION
        store = EvidenceStore.from_cache(cache, model, version)
        cached = cache.counts(model, version)
    store.save(os.path.join(judge_dir, "evidence.npz"))
    summary = {
        "dataset": dataset.name, "backend": _BACKEND.value, "model": model,
        "version": version, "sample_ratio": _SAMPLE_RATIO.value, "candidates": _CANDIDATES.value,
        "sampled_requests": len(sample), "training_requests": len(train),
        "stored_answers": cached["ok"], "stored_failures": cached["failed"], "run": counts,
        "api_key_env": _API_KEY_ENV.value if _BACKEND.value == "llm" else None,
    }
    if len(store):
        summary.update(separation(store, sample, items_kg))
    write_json(os.path.join(judge_dir, "run.json"), summary)
    return summary


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    quiet_library_logs()
    summary = run_or_exit(lambda: run(_CONFIG.value, _WORKDIR.value))
    for key, value in summary.items():
        print(f"{key:>24s}: {value}")
    print(f"{'evidence':>24s}: {as_path(_WORKDIR.value) / JUDGE_DIR}"
          "/evidence.npz")


if __name__ == "__main__":
    run_app(main)
