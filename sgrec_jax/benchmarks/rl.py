"""Benchmark section `rl`: one jitted RL step (`rl.grpo.make_rl_step`: rollout of G candidates
per request, pi_old and pi_ref scoring, rewards, A2PO advantages, one clipped policy update) in
completions/s, split into rollout, reward (+ advantages) and update time."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.benchmarks.base import (
    Row,
    Sizes,
    flops,
    generator,
    histories,
    model_figures,
    synthetic_codes,
)
from sgrec_jax.core.sharding import host_to_global, make_mesh
from sgrec_jax.data.split import PAD_ITEM
from sgrec_jax.models.generator import SidGenerator
from sgrec_jax.rewards.channel import (
    REWARD_CHANNELS,
    RewardChannel,
    RewardRequests,
    nan_where_padding,
    reward_tensor,
    safe_items,
)
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
from sgrec_jax.rl.grpo import RLSettings, init_extra, make_rl_step
from sgrec_jax.rl.rollout import generate
from sgrec_jax.sid.catalog import Catalog, build_catalog
from sgrec_jax.train.train_state import create_train_state, make_optimizer


def rl_section(sizes: Sizes) -> tuple[list[dict[str, Any]], list[Row]]:
    codes_nl, level_sizes = synthetic_codes(
        sizes.num_items, sizes.levels, sizes.codebook_size, sizes.seed
    )
    catalog = jax.device_put(build_catalog(codes_nl, level_sizes))
    results, rows = [], []
    for encoding in sizes.history_encodings:
        model = generator(sizes, codes_nl, level_sizes, encoding)
        result = model_figures(model, encoding) | rl_figures(sizes, model, catalog)
        results.append(result)
        rows += [
            (f"RL step, {encoding} history, {sizes.rl_batch} requests x G={sizes.rl_group} "
             f"({sizes.rl_rollout} rollout, A2PO, 1 update)",
             f"{result['completions_per_s']:.1f}", "completions/s"),
            ("  FLOPs per completion (XLA cost analysis)",
             f"{result['flops_per_completion'] / 1e6:.1f}", "MFLOP"),
            (f"  fraction of matmul throughput ({result['matmul_gflops']:.1f} GFLOP/s just "
             "before)", f"{result['fraction_of_matmul']:.2f}", ""),
            ("  requests/s", f"{result['requests_per_s']:.1f}", "requests/s"),
        ] + [
            (f"  {phase} time per step ({share:.0%})", f"{1000 * seconds:.1f}", "ms")
            for phase in ("rollout", "reward", "update")
            for seconds in [result[f"{phase}_seconds"]]
            for share in [seconds / result["seconds_per_step"]]
        ]
    return results, rows


def _cosine_score(
    emb_nd: jax.Array, requests: RewardRequests, items_bg: jax.Array, logprob_bg: jax.Array
) -> jax.Array:
    """cos(candidate, target) of unit item embeddings [N, D]: a semantic channel's cost."""
    del logprob_bg
    cos_bg = jnp.einsum("bgd,bd->bg", emb_nd[safe_items(items_bg)], emb_nd[requests.target_b])
    return nan_where_padding(cos_bg, items_bg)


@dataclasses.dataclass(frozen=True)
class CompiledRLStep:
    """The compiled RL step and what calling it needs: `compiled(state, *args)` (the call
    donates `state`); the rest is for the phase timings."""

    compiled: Any
    state: Any
    args: tuple[Any, ...]  # (reference parameters, channels, catalog, batch)
    graphdef: nnx.GraphDef
    estimator: Any
    channels: list[RewardChannel]
    batch: dict[str, jax.Array]
    settings: RLSettings


def compiled_rl_step(sizes: Sizes, model: SidGenerator, catalog: Catalog) -> CompiledRLStep:
    """The benchmark's RL step, compiled: the step `rl_figures` times and the profile section
    traces."""
    rng = np.random.default_rng(sizes.seed)
    emb_nd = rng.normal(size=(catalog.num_items, 32)).astype(np.float32)
    emb_nd /= np.linalg.norm(emb_nd, axis=1, keepdims=True)
    channels = [
        REWARD_CHANNELS.get("rank")(None, {}),
        RewardChannel("cosine", -1.0, 1.0, "semantic", jnp.asarray(emb_nd), _cosine_score),
    ]
    estimator = ESTIMATORS.build("a2po", [ChannelSpec.of(c) for c in channels], business="rank")
    mesh = make_mesh()
    optimizer = make_optimizer(1e-5, warmup_steps=10, total_steps=1000)
    graphdef, state, state_sharding = create_train_state(
        model, optimizer, jax.random.key(sizes.seed), mesh, extra=init_extra(estimator)
    )
    settings = RLSettings(
        group_size=sizes.rl_group, rollout=sizes.rl_rollout, temperature=1.0,
        updates_per_batch=1, clip_eps=0.2, beta=0.04, semantic_sample_ratio=1.0,
        judge_seed=sizes.seed,
    )
    rl_step = make_rl_step(
        graphdef=graphdef, optimizer=optimizer, channels=channels, estimator=estimator,
        settings=settings, mesh=mesh, state_sharding=state_sharding,
    )
    ref_params = jax.tree.map(jnp.copy, state.params)  # the step donates the state
    history_bh = histories(sizes.history, catalog.num_items, sizes.rl_batch, rng)
    batch = host_to_global({
        "history": history_bh,
        "history_mask": history_bh != PAD_ITEM,
        "target": rng.integers(0, catalog.num_items, sizes.rl_batch).astype(np.int32),
        "user": np.arange(sizes.rl_batch, dtype=np.int32),
    }, mesh)
    args = (ref_params, channels, catalog, batch)
    return CompiledRLStep(rl_step.lower(state, *args).compile(), state, args, graphdef, estimator,
                          channels, batch, settings)


def rl_figures(sizes: Sizes, model: SidGenerator, catalog: Catalog) -> dict[str, Any]:
    """Throughput of the jitted RL step on a mesh over all devices."""
    step = compiled_rl_step(sizes, model, catalog)
    compiled, state, args = step.compiled, step.state, step.args
    # One update per step, so the scan over updates runs its body once, as counted.
    step_flops = flops(compiled) * jax.device_count()
    state, metrics = compiled(state, *args)  # warm-up
    jax.block_until_ready(metrics)
    matmul = sizes.matmul()
    start = time.perf_counter()
    for _ in range(sizes.rl_steps):
        state, metrics = compiled(state, *args)
    jax.block_until_ready(metrics)
    seconds = time.perf_counter() - start
    completions = sizes.rl_steps * sizes.rl_batch * sizes.rl_group
    gflops = sizes.rl_steps * step_flops / seconds / 1e9
    phases = rl_phase_seconds(sizes, step.graphdef, state, step.estimator, step.channels, catalog,
                              step.batch, step.settings)
    step_seconds = seconds / sizes.rl_steps
    return {
        "completions_per_s": completions / seconds,
        "requests_per_s": sizes.rl_batch / step_seconds,
        "seconds_per_step": step_seconds,
        "rollout_seconds": phases["rollout"],
        "reward_seconds": phases["reward"],
        # The rest of the fused step: pi_old and pi_ref scoring, the clipped update, optimizer.
        "update_seconds": max(step_seconds - phases["rollout"] - phases["reward"], 0.0),
        "flops_per_completion": step_flops / (sizes.rl_batch * sizes.rl_group),
        "gflops": gflops,
        "matmul_gflops": matmul,
        "fraction_of_matmul": gflops / matmul,
    }


def rl_phase_seconds(sizes: Sizes, graphdef: nnx.GraphDef, state: Any, estimator: Any,
                     channels: Sequence[RewardChannel], catalog: Catalog, batch: dict,
                     settings: RLSettings) -> dict[str, float]:
    """Seconds per step of the RL step's phases, each jitted and timed on its own: "rollout"
    (generate G candidates per request) and "reward" (R[B, G, K] and the advantages).

    The RL step fuses everything into one program, so its update time is the step's time minus
    these two; XLA may overlap phases inside the fused step, so the split is approximate.
    """

    @jax.jit
    def rollout(params, model_state, rng):
        policy = nnx.merge(graphdef, params, model_state)
        return generate(policy, catalog, batch["history"], batch["history_mask"], rng,
                        mode=settings.rollout, group_size=settings.group_size,
                        temperature=settings.temperature)

    @jax.jit
    def reward(reward_channels, items_bg, logprob_bg, estimator_state):
        requests = RewardRequests.from_batch(batch)
        rewards_bgk = reward_tensor(reward_channels, requests, items_bg, logprob_bg)
        return estimator(rewards_bgk, estimator_state)[0]

    def best_seconds(fn: Callable[[], Any]) -> float:
        jax.block_until_ready(fn())  # compile and warm up
        times = []
        for _ in range(max(sizes.rl_steps, 2)):
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    key = jax.random.key(sizes.seed)
    group = rollout(state.params, state.model_state, key)
    logprob_bg = jnp.zeros(group.items_bg.shape, jnp.float32)
    estimator_state = state.extra["estimator"]
    return {
        "rollout": best_seconds(lambda: rollout(state.params, state.model_state, key)),
        "reward": best_seconds(lambda: reward(channels, group.items_bg, logprob_bg,
                                              estimator_state)),
    }
