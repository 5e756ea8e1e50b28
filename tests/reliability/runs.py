"""Tiny training runs through the real loop, in this process or as a separate one.

    python -m tests.reliability.runs --trainer=sft --run_dir=DIR [--num_steps=N]
        [--coordinator=127.0.0.1:PORT --num_processes=2 --process_id=I] [--max_file_bytes=B]

`train_sft` trains a small SID generator with the SFT loss through `train_supervised` (Grain
pipeline with per-process shards, `host_to_global`, Orbax checkpoints, metrics.jsonl);
`train_sft_shards` is the same run reading its training examples from ArrayRecord shards
(`data.shard_pipeline`) instead of memory;
`train_rl_run` aligns the same generator through the RL loop (`rl.training.train_rl`: sampled
rollouts, the jitted GRPO step, popo_light whose EMA state is checkpointed with the train state
and the data position, beam-search validation), rewarded by channels that need no trained
model. The command line runs a trainer the way `experiments.train` does
(`initialize_distributed`, then `run_or_exit`, so SIGTERM exits 143 after a save). The
reliability tests are written against
TRAINERS: a trainer takes (run_dir, mesh_config, **config overrides), leaves metrics.jsonl and
checkpoints of a TrainState in run_dir, and `fresh_state(name)` builds the state to restore them
into, so another stage (RL) is tested by adding its entry.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping

import jax
import numpy as np
import optax
from absl import logging
from flax import nnx
from ml_collections import ConfigDict

import sgrec_jax.registration  # noqa: F401  (run as a script: registers what configs name)
from experiments.configs.common import base_config, supervised_training
from sgrec_jax.core.distributed import initialize_distributed, xla_flags_with_host_devices
from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.shards import MANIFEST, ShardedExamples, ShardWriter
from sgrec_jax.data.split import PAD_ITEM, Examples
from sgrec_jax.models.registry import build_model
from sgrec_jax.rewards.channel import (
    REWARD_CHANNELS,
    RewardChannel,
    RewardRequests,
    nan_where_padding,
    safe_items,
)
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
from sgrec_jax.rl.evaluation import EVAL_BUSINESS
from sgrec_jax.rl.grpo import init_extra
from sgrec_jax.rl.training import train_rl
from sgrec_jax.sid.catalog import build_catalog
from sgrec_jax.stages.cli import run_or_exit
from sgrec_jax.stages.sft import sft_loss
from sgrec_jax.train.checkpointing import Checkpointer
from sgrec_jax.train.supervised import TrainOutcome, train_supervised
from sgrec_jax.train.train_state import TrainState, create_train_state, make_optimizer
from tests.models.tiny import CODES, NUM_ITEMS, SIZES, H

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_STEPS, EVAL_EVERY, BATCH = 24, 4, 16


def examples(num: int, seed: int) -> Examples:
    """`num` histories of tiny-catalog items, some left-padded, with their next item."""
    rng = np.random.default_rng(seed)
    history = rng.integers(0, NUM_ITEMS, (num, H)).astype(np.int32)
    pads = rng.integers(0, H - 1, num)
    history[np.arange(H)[None, :] < pads[:, None]] = PAD_ITEM  # left-padded, as splits are
    target = ((history[:, -1] * 7 + 3) % NUM_ITEMS).astype(np.int32)  # learnable
    return Examples(history=history, target=target, user=np.arange(num, dtype=np.int32))


def generator() -> nnx.Module:
    # d_model x d_ff = 64 x 256 = MIN_FSDP_SIZE elements: an fsdp axis splits the MLP kernels.
    return build_model(
        "encoder_decoder", codes_nl=CODES, level_sizes=SIZES, max_history=H, rngs=nnx.Rngs(0),
        num_layers=1, d_model=64, num_heads=2, d_ff=256, dropout=0.1,
    )


@nnx.jit
def _valid_nll(model: nnx.Module, history_bh, mask_bh, target_b) -> jax.Array:
    codes_bl = model.item_codes(target_b)
    logits_blv = model(history_bh, mask_bh, codes_bl, deterministic=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits_blv, codes_bl).sum(-1).mean()


def evaluate(model: nnx.Module, valid: Examples) -> dict[str, float]:
    """Teacher-forced validation: the negated SID NLL (larger is better), cheap to compile."""
    nll = _valid_nll(model, valid.history, valid.history != PAD_ITEM, valid.target)
    return {"neg_nll": -float(nll)}


def sft_config(**overrides) -> ConfigDict:
    config = supervised_training()
    config.update(batch_size=BATCH, num_steps=NUM_STEPS, learning_rate=3e-3, warmup_steps=2,
                  eval_every=EVAL_EVERY, patience=0, best_metric="neg_nll", log_every=1,
                  keep_checkpoints=2)
    config.update(overrides)
    return config


def train_sft(run_dir: str, mesh_config: ConfigDict, **overrides) -> TrainOutcome:
    return train_supervised(
        model=generator(), loss_fn=sft_loss, evaluate=evaluate, train=examples(160, 0),
        valid=examples(32, 1), config=sft_config(**overrides), mesh_config=mesh_config,
        run_dir=run_dir, seed=0,
    )


def sft_shards(run_dir: str) -> ShardedExamples:
    """`train_sft`'s training examples as shards in run_dir, written by each process for
    itself (no process waits on another's write) unless a previous start finished them."""
    directory = os.path.join(run_dir, f"shards_{jax.process_index()}")
    if not os.path.exists(os.path.join(directory, MANIFEST)):
        train = examples(160, 0)
        writer = ShardWriter(directory, max_history=H, examples_per_shard=50)
        writer.add("train", train)
        writer.finish({"name": "tiny", "num_users": len(train), "num_items": NUM_ITEMS,
                       "fingerprint": "examples(160, 0)"}, items={"bids": np.zeros(NUM_ITEMS)})
    return ShardedExamples(directory)


def train_sft_shards(run_dir: str, mesh_config: ConfigDict, **overrides) -> TrainOutcome:
    return train_supervised(
        model=generator(), loss_fn=sft_loss, evaluate=evaluate, train=sft_shards(run_dir),
        valid=examples(32, 1), config=sft_config(**overrides), mesh_config=mesh_config,
        run_dir=run_dir, seed=0,
    )


def fresh_sft_state(mesh_config: ConfigDict, extra: Mapping | None = None) -> TrainState:
    """The initial state `train_sft` starts from (plus `extra` arrays), to restore into."""
    config = sft_config()
    optimizer = make_optimizer(config.learning_rate, config.warmup_steps, config.num_steps,
                               weight_decay=config.weight_decay, clip_norm=config.clip_norm)
    mesh = make_mesh(mesh_config.data, mesh_config.fsdp)
    return create_train_state(generator(), optimizer, jax.random.key(0), mesh, extra=extra)[1]


def _value_score(tables, requests: RewardRequests, items_bg: jax.Array,
                 logprob_bg: jax.Array) -> jax.Array:
    del requests, logprob_bg
    return nan_where_padding(tables["value_n"][safe_items(items_bg)], items_bg)


def value_channel(name: str) -> RewardChannel:
    """A fixed per-item value in [0, 1]: a business reward that needs no trained model."""
    value_n = np.random.default_rng(3).uniform(size=NUM_ITEMS).astype(np.float32)
    return RewardChannel(name, 0.0, 1.0, "business", {"value_n": jax.device_put(value_n)},
                         _value_score)


def rl_config(mesh_config: ConfigDict | None = None, **overrides) -> ConfigDict:
    """The "rl" stage's fields for the tiny run: sampled rollouts (so the resumed PRNG key
    matters), two updates per batch, popo_light with an EMA (so its state must be restored)."""
    config = base_config()
    config.rl.update(channels=("hit", "value"), semantic_eval_channel="hit", estimator="popo_light",
                     group_size=4, rollout="sample", batch_size=8, updates_per_batch=2,
                     num_steps=NUM_STEPS, learning_rate=3e-3, warmup_steps=2, eval_every=EVAL_EVERY,
                     log_every=1, keep_checkpoints=2)
    config.rl.estimator_options.popo_light.ema = 0.5
    config.rl.update(overrides)
    config.eval.update(beam_size=10, batch_size=32)
    if mesh_config is not None:
        config.mesh = mesh_config
    return config


def rl_channels() -> list[RewardChannel]:
    return [REWARD_CHANNELS.get("hit")(None, {}), value_channel("value")]


def train_rl_run(run_dir: str, mesh_config: ConfigDict, **overrides) -> dict[str, object]:
    config = rl_config(mesh_config, **overrides)
    catalog = jax.device_put(build_catalog(CODES, SIZES))
    eval_channels = [value_channel(EVAL_BUSINESS), REWARD_CHANNELS.get("hit")(None, {})]
    _, summary = train_rl(config, NUM_ITEMS, generator(), catalog,
                          rl_channels(), eval_channels, examples(160, 0), examples(32, 1),
                          run_dir)
    return summary


def fresh_rl_state(mesh_config: ConfigDict, extra: Mapping | None = None) -> TrainState:
    """The initial state `train_rl_run` starts from (its estimator's state in `extra`)."""
    rl = rl_config().rl
    estimator = ESTIMATORS.build(rl.estimator, [ChannelSpec.of(c) for c in rl_channels()],
                                 **rl.estimator_options[rl.estimator])
    optimizer = make_optimizer(rl.learning_rate, rl.warmup_steps * rl.updates_per_batch,
                               rl.num_steps * rl.updates_per_batch,
                               weight_decay=rl.weight_decay, clip_norm=rl.clip_norm)
    mesh = make_mesh(mesh_config.data, mesh_config.fsdp)
    return create_train_state(generator(), optimizer, jax.random.key(0), mesh,
                              extra={**init_extra(estimator), **(extra or {})})[1]


TRAINERS: Mapping[str, Callable[..., object]] = {"sft": train_sft, "sft_shards": train_sft_shards,
                                                 "rl": train_rl_run}
FRESH_STATES: Mapping[str, Callable[..., TrainState]] = {"sft": fresh_sft_state,
                                                         "sft_shards": fresh_sft_state,
                                                         "rl": fresh_rl_state}


def mesh_config(data: int = -1, fsdp: int = 1) -> ConfigDict:
    return ConfigDict({"data": data, "fsdp": fsdp})


# -- reading a run ------------------------------------------------------------------------------


def metric_records(run_dir: str | os.PathLike) -> list[dict]:
    """metrics.jsonl, one dict per write, in order."""
    text = (pathlib.Path(run_dir) / "metrics.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def train_losses(run_dir: str | os.PathLike) -> dict[int, float]:
    records = [r for r in metric_records(run_dir) if "train/loss" in r]
    steps = [r["step"] for r in records]
    assert len(steps) == len(set(steps)), f"steps logged twice: {steps}"
    return {r["step"]: r["train/loss"] for r in records}


def host(tree):
    """Numpy copies; PRNG keys as their raw data."""
    def to_host(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return jax.tree.map(to_host, tree)


def checkpointed_state(trainer: str, run_dir: str | os.PathLike, step: int | None = None):
    """(step, host copy of the TrainState) of checkpoint `step` (default: the latest)."""
    with Checkpointer(os.path.join(run_dir, "checkpoints")) as ckpt:
        step = ckpt.latest_step() if step is None else step
        state = ckpt.restore(step, FRESH_STATES[trainer](mesh_config(1, 1)))
    return step, host(state)


def saved_on(run_dir: str | os.PathLike, step: int) -> dict:
    """The device and process counts checkpoint `step` was written on."""
    path = pathlib.Path(run_dir) / "checkpoints" / str(step) / "metadata" / "metadata"
    return json.loads(path.read_text())["saved_on"]


# -- separate processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir, *args: str, devices: int = 1, env: Mapping[str, str] | None = None,
          trainer: str = "sft") -> subprocess.Popen:
    """Starts `python -m tests.reliability.runs` on `devices` CPU devices."""
    full_env = {**os.environ, "JAX_PLATFORMS": "cpu", **(env or {}),
                "XLA_FLAGS": xla_flags_with_host_devices(devices)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.runs", f"--trainer={trainer}",
         f"--run_dir={run_dir}", *args],
        cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    """Waits for `process`; returns (exit code, stderr)."""
    try:
        _, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    return process.returncode, err


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", default="sft", choices=sorted(TRAINERS))
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--num_steps", type=int, default=NUM_STEPS)
    parser.add_argument("--max_steps_per_run", type=int, default=0)
    parser.add_argument("--data", type=int, default=-1)
    parser.add_argument("--fsdp", type=int, default=1)
    parser.add_argument("--coordinator", default="")
    parser.add_argument("--num_processes", type=int, default=0)
    parser.add_argument("--process_id", type=int, default=-1)
    parser.add_argument("--max_file_bytes", type=int, default=0,
                        help="RLIMIT_FSIZE: writes past this size fail with EFBIG")
    args = parser.parse_args(argv)
    logging.set_verbosity(logging.INFO)  # the loop's progress and resume lines, on stderr
    if args.max_file_bytes:
        # Ignored, SIGXFSZ no longer kills the process: the write fails with EFBIG instead, as
        # it would with ENOSPC on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (args.max_file_bytes, resource.RLIM_INFINITY))
    run_or_exit(lambda: initialize_distributed(ConfigDict({
        "enabled": bool(args.coordinator), "coordinator_address": args.coordinator,
        "num_processes": args.num_processes, "process_id": args.process_id,
        "initialization_timeout": 60,
    })))
    run_or_exit(lambda: TRAINERS[args.trainer](
        args.run_dir, mesh_config(args.data, args.fsdp), num_steps=args.num_steps,
        max_steps_per_run=args.max_steps_per_run,
    ))
    print("done")
    if jax.process_count() > 1:
        jax.distributed.shutdown()


if __name__ == "__main__":
    main()
