r"""Scale of the ArrayRecord path against the in-memory one: shard size, write time, read rate,
SFT steps, peak host memory of the training alone and of the whole pipeline, at two or more data
sizes.

    python -m experiments.data_scale --workdir=/tmp/data_scale \
        [--interactions=1000000,10000000] [--steps=300] [--batch_size=256] \
        [--measure=read,train,pipeline]

For each size S the quickstart world (experiments/configs/quickstart.py) of about S interactions
(WorldConfig.user_block_size bounds its generation) is written as shards the way
`python -m experiments.write_shards` writes them (reused if the directory already holds them);
then, each in a fresh process so that its peak RSS is its own, from each source:
  read      the training pipeline alone, `--read_batches` batches: examples/s and peak RSS, from
            the shards (`shard_pipeline`) and in memory (`pipeline.train_iterator` over the same
            training split, loaded from the shards: what leave_one_out would hold);
  train     `--steps` SFT steps of a small generator through `train_supervised`;
  pipeline  `run_pipeline` as `python -m experiments.train` runs it: the "sids" and "sft" stages
            of the quickstart config with that small generator, `--steps` steps, validation on
            `--valid_users` and the test ranking on `--test_users` (eval.test_users). From
            memory the dataset is loaded (the world generated) as a memory run does; from the
            shards the stages read the shard directory alone.
The in-memory rows grow with S (88 bytes per example at H = 20, plus the epoch permutation; the
whole dataset for the pipeline); the shard rows should not. Prints the tables and writes them to
WORKDIR/data_scale.json (read, train) and WORKDIR/data_scale_pipeline.json (pipeline, with the
provenance and the command).
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
import sys
import time
from typing import Any

import jax
import numpy as np
from absl import app, flags
from etils import epath
from flax import nnx
from ml_collections import ConfigDict

import sgrec_jax.registration  # noqa: F401  (registers everything a config names)
from experiments.configs import quickstart
from experiments.configs.common import supervised_training
from sgrec_jax.core.provenance import provenance
from sgrec_jax.data.load import dataset_settings
from sgrec_jax.data.pipeline import train_iterator
from sgrec_jax.data.shard_pipeline import shard_train_iterator
from sgrec_jax.data.shards import MANIFEST, ShardedExamples, read_side_table, write_shards
from sgrec_jax.data.split import Examples
from sgrec_jax.models.registry import build_model
from sgrec_jax.stages.cli import define_workdir
from sgrec_jax.stages.pipeline import load_configured_dataset, run_pipeline
from sgrec_jax.stages.sft import sft_loss
from sgrec_jax.train.next_item import next_item_nll
from sgrec_jax.train.supervised import train_supervised

_WORKDIR = define_workdir("Where the shards, runs and results go.")
_INTERACTIONS = flags.DEFINE_list("interactions", ["1000000", "10000000"],
                                  "World sizes, in interactions (about).")
_STEPS = flags.DEFINE_integer("steps", 300, "SFT steps per train and pipeline run.")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Global batch size.")
_READ_BATCHES = flags.DEFINE_integer("read_batches", 1000, "Batches timed by the read phase.")
_NUM_ITEMS = flags.DEFINE_integer("num_items", 2000, "Catalog size of the world.")
_MAX_HISTORY = flags.DEFINE_integer("max_history", 20, "History cap H.")
_USER_BLOCK = flags.DEFINE_integer("user_block_size", 20_000, "Users simulated at a time.")
_VALID_USERS = flags.DEFINE_integer("valid_users", 256, "Validation users of a pipeline run.")
_TEST_USERS = flags.DEFINE_integer("test_users", 500, "Test users a pipeline run ranks.")
_MEASURE = flags.DEFINE_list("measure", ["read", "train", "pipeline"],
                             "Measurements per size and source: read, train, pipeline.")
_PHASE = flags.DEFINE_enum("phase", "all", ["all", "write", "read", "train", "pipeline"],
                           "Internal: one measurement, run by `all` in a child process.")
_SOURCE = flags.DEFINE_enum("source", "array_record", ["memory", "array_record"],
                            "Internal: the source a read or train phase measures.")
_SHARDS = flags.DEFINE_string("shards", "", "Internal: the shard directory of a phase.")

_MEAN_SEQ_LEN = 10.0  # the world's default; users = interactions / mean length


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def digit_codes(num_items: int, levels: int = 3) -> tuple[np.ndarray, tuple[int, ...]]:
    """Distinct SIDs from each item's base-b digits (b^levels >= num_items): a stand-in for the
    "sids" stage, which measures nothing about the data path."""
    base = math.ceil(num_items ** (1 / levels))
    codes = np.stack(np.unravel_index(np.arange(num_items), (base,) * levels), axis=1)
    return codes.astype(np.int32), (base,) * levels


def shard_summary(directory: epath.Path) -> dict[str, Any]:
    """What the manifest of `directory` says about its size and write time."""
    manifest = json.loads((directory / MANIFEST).read_text())
    train = manifest["splits"]["train"]
    examples = sum(s["num_examples"] for s in manifest["splits"].values())
    return {"interactions": manifest["dataset"]["num_interactions"],
            "users": manifest["dataset"]["num_users"], "train_examples": train["num_examples"],
            "train_shard_mib": sum(f["bytes"] for f in train["files"]) / 2**20,
            "shard_files": len(train["files"]), "write_s": manifest["write_seconds"],
            "write_examples_per_s": examples / manifest["write_seconds"]}


def scale_config(interactions: int, *, num_items: int, max_history: int,
                 user_block_size: int) -> ConfigDict:
    """The quickstart config over a world of about `interactions`, with the small generator the
    train phase uses (what every phase of one size reads and writes)."""
    config = quickstart.get_config("rq_kmeans")
    config.data.options.update(num_items=num_items,
                               num_users=max(1, round(interactions / _MEAN_SEQ_LEN)),
                               user_block_size=user_block_size)
    config.data.max_history = max_history
    config.model.options.update(num_layers=2, d_model=64, num_heads=4, d_ff=256)
    return config


def measure_write(directory: epath.Path, config: ConfigDict) -> dict[str, Any]:
    """Generates the world of `config` and writes its shards as experiments.write_shards does,
    with digit SIDs as the "sids" table (for the train phase)."""
    start = time.perf_counter()
    dataset = load_configured_dataset(config)
    generate_seconds = time.perf_counter() - start
    codes, sizes = digit_codes(dataset.num_items)
    write_shards(dataset, directory, max_history=config.data.max_history,
                 side_tables={"sids": {"codes_nl": codes, "level_sizes": sizes}},
                 settings=dataset_settings(config.data))
    return {"generate_s": generate_seconds, "write_peak_rss_mib": peak_rss_mib()}


def _train_data(shards: ShardedExamples, source: str) -> tuple[Examples | ShardedExamples, float]:
    """(the training split from `source`, seconds to get it)."""
    start = time.perf_counter()
    return (shards.to_examples() if source == "memory" else shards), time.perf_counter() - start


def measure_read(shards_dir: str, source: str, *, batch_size: int,
                 num_batches: int) -> dict[str, Any]:
    """The pipeline alone: examples/s over `num_batches` batches after a warm-up."""
    train, load_seconds = _train_data(ShardedExamples(shards_dir), source)
    make = train_iterator if source == "memory" else shard_train_iterator
    data = make(train, batch_size=batch_size, seed=0, shard_index=0, shard_count=1)
    for _ in range(min(10, num_batches)):
        next(data)
    start = time.perf_counter()
    for _ in range(num_batches):
        next(data)
    seconds = time.perf_counter() - start
    return {"load_s": load_seconds, "read_examples_per_s": num_batches * batch_size / seconds,
            "read_peak_rss_mib": peak_rss_mib()}


def measure_train(shards_dir: str, source: str, run_dir: epath.Path, *, steps: int,
                  batch_size: int) -> dict[str, Any]:
    """`steps` SFT steps of a small generator from `source`, validated once at the end."""
    shards = ShardedExamples(shards_dir)
    train, load_seconds = _train_data(shards, source)
    valid_split = ShardedExamples(shards_dir, "valid")
    rows = valid_split.read(range(min(512, len(valid_split))))
    valid = Examples(rows["history"], rows["target"], rows["user"])
    sids = read_side_table(shards_dir, "sids")
    model = build_model("encoder_decoder", codes_nl=sids["codes_nl"],
                        level_sizes=tuple(int(s) for s in sids["level_sizes"]),
                        max_history=shards.max_history, rngs=nnx.Rngs(0), num_layers=2,
                        d_model=64, num_heads=4, d_ff=256)

    def evaluate(model, examples: Examples) -> dict[str, float]:
        """Teacher-forced SID NLL: a cheap check that training went somewhere."""
        codes = model.item_codes(examples.target)
        logits = model(examples.history, examples.history_mask, codes, deterministic=True)
        nll = next_item_nll(logits, codes).sum(-1).mean()
        return {"neg_nll": -float(nll)}

    config = supervised_training()
    config.update(batch_size=batch_size, num_steps=steps, warmup_steps=min(10, steps - 1),
                  eval_every=steps, log_every=max(1, steps // 10), patience=0,
                  best_metric="neg_nll", keep_checkpoints=1)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    outcome = train_supervised(
        model=model, loss_fn=sft_loss, evaluate=evaluate, train=train, valid=valid,
        config=config, mesh_config=ConfigDict({"data": -1, "fsdp": 1}), run_dir=str(run_dir),
        seed=0,
    )
    return {"load_s": load_seconds, "train_examples_per_s": outcome.examples_per_second(
        batch_size), "train_valid_nll": -outcome.best_metric,
        "train_peak_rss_mib": peak_rss_mib()}


def measure_pipeline(config: ConfigDict, source: str, shards_dir: str, workdir: epath.Path, *,
                     steps: int, batch_size: int, valid_users: int,
                     test_users: int) -> dict[str, Any]:
    """`run_pipeline` of the sids and sft stages from `source` in a fresh `workdir`."""
    config = config.copy_and_resolve_references()
    config.stages = ("sids", "sft")
    config.data.update(source=source, shards_dir=shards_dir)
    config.sft.update(batch_size=batch_size, num_steps=steps, warmup_steps=min(10, steps - 1),
                      eval_every=steps, log_every=max(1, steps // 10), patience=0,
                      keep_checkpoints=1)
    config.eval.update(beam_size=10, valid_users=valid_users, test_users=test_users)
    if workdir.exists():
        shutil.rmtree(workdir)
    results = run_pipeline(config, workdir)
    return {"pipeline_wall_s": results["wall_seconds"],
            "pipeline_examples_per_s": results["sft/examples_per_s"],
            "pipeline_sft_train_s": results["sft/train_seconds"],
            "pipeline_recall@10": results["recall@10"], "pipeline_test_users": results["num_users"],
            "pipeline_peak_rss_mib": peak_rss_mib()}


def _child(phase: str, source: str, shards: epath.Path, interactions: int) -> dict[str, Any]:
    """Runs one phase in a fresh Python; returns the JSON line it prints last."""
    argv = [sys.executable, "-m", "experiments.data_scale", f"--workdir={_WORKDIR.value}",
            f"--phase={phase}", f"--source={source}", f"--shards={shards}",
            f"--interactions={interactions}", f"--steps={_STEPS.value}",
            f"--batch_size={_BATCH.value}", f"--read_batches={_READ_BATCHES.value}",
            f"--num_items={_NUM_ITEMS.value}", f"--max_history={_MAX_HISTORY.value}",
            f"--user_block_size={_USER_BLOCK.value}", f"--valid_users={_VALID_USERS.value}",
            f"--test_users={_TEST_USERS.value}"]
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"{phase} ({source}, {interactions}) failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _config(interactions: int) -> ConfigDict:
    return scale_config(interactions, num_items=_NUM_ITEMS.value, max_history=_MAX_HISTORY.value,
                        user_block_size=_USER_BLOCK.value)


def run_phase() -> dict[str, Any]:
    """The measurement --phase names, in this process."""
    shards, interactions = epath.Path(_SHARDS.value), int(_INTERACTIONS.value[0])
    if _PHASE.value == "write":
        return measure_write(shards, _config(interactions))
    if _PHASE.value == "read":
        return measure_read(str(shards), _SOURCE.value, batch_size=_BATCH.value,
                            num_batches=_READ_BATCHES.value)
    run_dir = epath.Path(_WORKDIR.value) / f"{_PHASE.value}_{_SOURCE.value}_{interactions}"
    if _PHASE.value == "pipeline":
        return measure_pipeline(_config(interactions), _SOURCE.value, str(shards), run_dir,
                                steps=_STEPS.value, batch_size=_BATCH.value,
                                valid_users=_VALID_USERS.value, test_users=_TEST_USERS.value)
    return measure_train(str(shards), _SOURCE.value, run_dir, steps=_STEPS.value,
                         batch_size=_BATCH.value)


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    print("  ".join(f"{c:>20s}" for c in columns))
    for row in rows:
        print("  ".join(f"{row[c]:>20.6g}" if isinstance(row.get(c), float)
                        else f"{str(row.get(c, '')):>20s}" for c in columns))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _PHASE.value != "all":
        print(json.dumps(run_phase()))
        return
    measure = set(_MEASURE.value)
    if not measure or measure - {"read", "train", "pipeline"}:
        raise app.UsageError(f"--measure takes read, train, pipeline; got {_MEASURE.value}")
    if _STEPS.value < 1 and measure & {"train", "pipeline"}:
        raise app.UsageError("--steps must be >= 1 to measure train or pipeline")
    workdir = epath.Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m experiments.data_scale", *sys.argv[1:]])
    record = provenance({})  # the data are generated: no files to hash
    rows, pipeline_rows = [], []
    for interactions in (int(s) for s in _INTERACTIONS.value):
        shards = workdir / f"shards_{interactions}"
        written = (_child("write", "array_record", shards, interactions)
                   if not (shards / MANIFEST).exists() else {"reused_shards": True})
        written.update(shard_summary(shards))
        for source in ("memory", "array_record"):
            row = {"size": interactions, "source": source, **written}
            if "read" in measure:
                row.update(_child("read", source, shards, interactions))
            if "train" in measure:
                row.update({k if k != "load_s" else "train_load_s": v for k, v in
                            _child("train", source, shards, interactions).items()})
            if measure & {"read", "train"}:
                rows.append(row)
                print(json.dumps(row), flush=True)
            if "pipeline" in measure:
                pipeline_rows.append({"size": interactions, "source": source,
                                      "interactions": written["interactions"],
                                      "users": written["users"],
                                      **_child("pipeline", source, shards, interactions)})
                print(json.dumps(pipeline_rows[-1]), flush=True)
    if rows:
        (workdir / "data_scale.json").write_text(json.dumps(rows, indent=2) + "\n")
        _print_table(rows, ["size", "source", "train_examples", "train_shard_mib", "write_s",
                            "read_examples_per_s", "read_peak_rss_mib", "train_examples_per_s",
                            "train_peak_rss_mib"])
    if pipeline_rows:
        out = {"command": command, "steps": _STEPS.value, "batch_size": _BATCH.value,
               "valid_users": _VALID_USERS.value, "test_users": _TEST_USERS.value,
               "device": jax.devices()[0].platform, "provenance": record, "rows": pipeline_rows}
        (workdir / "data_scale_pipeline.json").write_text(json.dumps(out, indent=2) + "\n")
        _print_table(pipeline_rows, ["size", "source", "users", "pipeline_wall_s",
                                     "pipeline_examples_per_s", "pipeline_peak_rss_mib"])
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; written to {workdir}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir"])
    app.run(main)
