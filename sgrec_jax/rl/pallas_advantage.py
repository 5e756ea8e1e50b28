"""Group statistics of all K reward channels and the advantage mix, as one Pallas kernel.

`mix_block` is the math (per-channel `z_G`, NaN masks, per-request renormalised weights and the
mixing step of the non-gradient estimators); `mixed_advantage` runs it either as plain jnp on the
whole batch ("xla", the reference) or as a Pallas kernel over a real grid of request blocks
("pallas"). Both call the same `mix_block`, so they differ only in tiling and padding. The kernel
works channel-first (r_kbg), so a block's minor dims are (requests, group) as TPU tiles want.

Mix modes (static):
  "rewards":    A = z_G(sum_k w_bk r~_k), r~_k = (r_k - low_k) * inv_range_k (weighted_sum, single,
                popo_light, popo);
  "advantages": A = sum_k w_bk z_G(r_k) (adv_sum, mgda; gdpo divides by the batch std outside);
  "a2po":       A = A_b + lam * A_s (algorithms.md section 4).
w_bk are the weights renormalised over the channels judged for request b, keeping their total.
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl

from sgrec_jax.core.group_stats import EPS, group_stats

MIX_MODES = ("rewards", "advantages", "a2po")


class MixSpec(NamedTuple):
    """Static description of a mix: the mode and, for "a2po", the two channel indices."""

    mode: str
    business: int = 0
    semantic: int = 0


class MixResult(NamedTuple):
    """Output of the mix for a batch.

    Attributes:
      adv_bg: float32 [B, G] the mixed advantage.
      z_bgk: float32 [B, G, K] each channel's z_G (0 for unjudged or constant groups).
      judged_bk: bool [B, K] the channel is judged (all G finite) for the request.
      constant_bk: bool [B, K] the channel's group is judged and constant.
    """

    adv_bg: jax.Array
    z_bgk: jax.Array
    judged_bk: jax.Array
    constant_bk: jax.Array


def a2po_lambda(a_b: jax.Array, a_s: jax.Array) -> jax.Array:
    """lam = 1[sign A_b = sign A_s] * min(|A_b|, |A_s|) / (max(|A_b|, |A_s|) + eps)."""
    abs_b, abs_s = jnp.abs(a_b), jnp.abs(a_s)
    # Compared without jnp.sign, whose TPU lowering needs a real device to pick the generation.
    same_sign = ((a_b > 0) == (a_s > 0)) & ((a_b < 0) == (a_s < 0))
    return jnp.where(same_sign, jnp.minimum(abs_b, abs_s) / (jnp.maximum(abs_b, abs_s) + EPS), 0.0)


def renormalised_weights(w_k11: jax.Array, judged_kb1: jax.Array) -> jax.Array:
    """float32 [K, B, 1]: w_k over the channels judged for each request, keeping sum_k w_k.

    All zero for a request with no judged channel of nonzero weight.
    """
    kept_kb1 = jnp.where(judged_kb1, w_k11, 0.0)
    kept_b1 = jnp.sum(kept_kb1, axis=0)
    scale_b1 = jnp.where(kept_b1 != 0.0, jnp.sum(w_k11, axis=0) / jnp.where(
        kept_b1 != 0.0, kept_b1, 1.0), 0.0)
    return kept_kb1 * scale_b1


def _pick(x_kbg: jax.Array, k: int) -> jax.Array:
    """x[k] of x [K, ...] as a masked sum over the channel axis (exact: one term is nonzero).

    Written without indexing because the Pallas Triton lowering (GPU) has no slice."""
    ids = jax.lax.broadcasted_iota(jnp.int32, x_kbg.shape, 0)
    return jnp.sum(jnp.where(ids == k, x_kbg, 0.0), axis=0)


def mix_block(r_kbg: jax.Array, w_k11: jax.Array, low_k11: jax.Array, inv_range_k11: jax.Array,
              spec: MixSpec):
    """The mix on channel-first rewards r [K, B, G] with per-channel coefficients [K, 1, 1]
    (weight w, low, inv_range).

    Returns (adv_bg, z_kbg, judged_kb1, constant_kb1); masks as float32 (1.0 = True).
    """
    stats = group_stats(r_kbg)
    z_kbg = stats.z_bg
    judged_kb1 = stats.judged_b[..., None]
    constant_kb1 = stats.constant_b[..., None]
    if spec.mode == "a2po":
        a_b, a_s = _pick(z_kbg, spec.business), _pick(z_kbg, spec.semantic)
        # An unjudged semantic channel has A_s = 0, hence A = A_b exactly.
        adv_bg = a_b + a2po_lambda(a_b, a_s) * a_s
    else:
        w_kb1 = renormalised_weights(w_k11, judged_kb1)
        if spec.mode == "advantages":
            adv_bg = jnp.sum(w_kb1 * z_kbg, axis=0)
        elif spec.mode == "rewards":
            mapped_kbg = (r_kbg - low_k11) * inv_range_k11
            mix_bg = jnp.sum(w_kb1 * jnp.where(judged_kb1, mapped_kbg, 0.0), axis=0)
            any_b1 = jnp.sum(jnp.abs(w_kb1), axis=0) > 0.0
            adv_bg = group_stats(jnp.where(any_b1, mix_bg, jnp.nan)).z_bg
        else:
            raise ValueError(f"unknown mix mode {spec.mode!r}; valid: {', '.join(MIX_MODES)}")
    return adv_bg, z_kbg, judged_kb1.astype(jnp.float32), constant_kb1.astype(jnp.float32)


def _coefficients(weights_k, low_k, inv_range_k, k: int) -> tuple[jax.Array, ...]:
    """(w_k11, low_k11, inv_range_k11): each coefficient broadcast to float32 [K, 1, 1]."""
    return tuple(jnp.broadcast_to(jnp.asarray(c, jnp.float32), (k,))[:, None, None]
                 for c in (weights_k, low_k, inv_range_k))


def _result(adv_bg, z_kbg, judged_kb1, constant_kb1) -> MixResult:
    return MixResult(
        adv_bg=adv_bg,
        z_bgk=jnp.moveaxis(z_kbg, 0, -1),
        judged_bk=judged_kb1[..., 0].T > 0.5,
        constant_bk=constant_kb1[..., 0].T > 0.5,
    )


def _kernel(r_ref, w_ref, low_ref, inv_ref, adv_ref, z_ref, judged_ref, constant_ref, *,
            spec: MixSpec):
    adv_bg, z_kbg, judged_kb1, constant_kb1 = mix_block(
        r_ref[...], w_ref[...], low_ref[...], inv_ref[...], spec)
    adv_ref[...] = adv_bg
    z_ref[...] = z_kbg
    judged_ref[...] = judged_kb1
    constant_ref[...] = constant_kb1


def default_interpret() -> bool:
    """Pallas runs in interpret mode on CPU, compiled on accelerators."""
    return jax.default_backend() == "cpu"


def _power_of_2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def mixed_advantage_pallas(r_kbg: jax.Array, coefficients: tuple[jax.Array, ...],
                           spec: MixSpec, *, block_b: int = 8, interpret: bool | None = None,
                           platform: str | None = None) -> MixResult:
    """`mix_block` as a Pallas kernel over a grid of `block_b`-request blocks (B padded up).

    `platform` ("tpu" or "gpu"; default: JAX's default backend) picks the compiled lowering:
    Mosaic on TPU, Triton on GPU (`pl.pallas_call`'s Mosaic GPU path wants 128-byte copies;
    jax 0.12 deprecates Pallas' Triton backend in favour of Mosaic GPU, a port still to do).
    Triton needs every block's size to be a power of 2, so K is padded up to one with all-NaN
    (unjudged, weight 0) channels, and on GPU block_b and G must be powers of 2.
    """
    k, b, g = r_kbg.shape
    if interpret is None:
        interpret = default_interpret()
    platform = platform or jax.default_backend()
    num_blocks = -(-b // block_b)
    compiler_params = None
    if not interpret and platform == "gpu":
        if block_b != _power_of_2(block_b) or g != _power_of_2(g):
            raise ValueError(f"Pallas on GPU (Triton) needs block_b and the group size G to be "
                             f"powers of 2, got block_b={block_b}, G={g}; use impl 'xla'")
        from jax.experimental.pallas import triton as pltriton

        compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=1)
    elif not interpret and num_blocks > 1 and block_b % 8:
        # A block's request dim is a TPU tile's sublane dim: a multiple of 8 or the whole array.
        raise ValueError(f"compiled Pallas needs block_b a multiple of 8, got {block_b}")
    padded_b, padded_k = num_blocks * block_b, _power_of_2(k)
    # Padding requests are constant groups (z = 0) and padding channels unjudged groups of
    # weight 0 (their z is 0 and renormalisation skips them); both are sliced off below.
    r_kbg = jnp.pad(r_kbg.astype(jnp.float32), ((0, padded_k - k), (0, padded_b - b), (0, 0)))
    r_kbg = r_kbg.at[k:].set(jnp.nan)
    coefficients = [jnp.pad(c, ((0, padded_k - k), (0, 0), (0, 0))) for c in coefficients]
    request_block = pl.BlockSpec((padded_k, block_b, g), lambda i: (0, i, 0))
    flag_block = pl.BlockSpec((padded_k, block_b, 1), lambda i: (0, i, 0))
    coefficient_block = pl.BlockSpec((padded_k, 1, 1), lambda i: (0, 0, 0))
    adv_bg, z_kbg, judged_kb1, constant_kb1 = pl.pallas_call(
        functools.partial(_kernel, spec=spec),
        grid=(num_blocks,),
        in_specs=[request_block] + [coefficient_block] * 3,
        out_specs=[pl.BlockSpec((block_b, g), lambda i: (i, 0)), request_block, flag_block,
                   flag_block],
        out_shape=[
            jax.ShapeDtypeStruct((padded_b, g), jnp.float32),
            jax.ShapeDtypeStruct((padded_k, padded_b, g), jnp.float32),
            jax.ShapeDtypeStruct((padded_k, padded_b, 1), jnp.float32),
            jax.ShapeDtypeStruct((padded_k, padded_b, 1), jnp.float32),
        ],
        interpret=interpret,
        compiler_params=compiler_params,
        name="mixed_advantage",
    )(r_kbg, *coefficients)
    return _result(adv_bg[:b], z_kbg[:k, :b], judged_kb1[:k, :b], constant_kb1[:k, :b])


def mixed_advantage(rewards_bgk: jax.Array, spec: MixSpec, weights_k=1.0, low_k=0.0,
                    inv_range_k=1.0, *, impl: str = "xla", block_b: int = 8,
                    interpret: bool | None = None, platform: str | None = None) -> MixResult:
    """The mixed advantage of rewards [B, G, K] (NaN = not judged); impl "xla" | "pallas"
    (`platform`: see `mixed_advantage_pallas`)."""
    rewards_bgk = rewards_bgk.astype(jnp.float32)
    r_kbg = jnp.moveaxis(rewards_bgk, -1, 0)
    coefficients = _coefficients(weights_k, low_k, inv_range_k, r_kbg.shape[0])
    if impl == "xla":
        return _result(*mix_block(r_kbg, *coefficients, spec))
    if impl == "pallas":
        return mixed_advantage_pallas(r_kbg, coefficients, spec, block_b=block_b,
                                      interpret=interpret, platform=platform)
    raise ValueError(f"unknown impl {impl!r}; valid: pallas, xla")


def random_rewards(batch: int, group: int, channels: int, seed: int = 0) -> np.ndarray:
    """float32 [B, G, K] normal rewards with the cases the kernel must get right: every fourth
    request has a constant (zero-std) group on channel 0, every fifth has channel K-1 all NaN
    (not judged), every seventh one NaN candidate on channel 0."""
    rng = np.random.default_rng(seed)
    r_bgk = rng.normal(0.0, 2.0, size=(batch, group, channels)).astype(np.float32)
    r_bgk[::4, :, 0] = 0.7
    r_bgk[1::5, :, channels - 1] = np.nan
    r_bgk[2::7, rng.integers(group), 0] = np.nan
    return r_bgk


def benchmark_advantages(batch: int, group: int, channels: int, block_b: int, *,
                         mode: str = "rewards", repeats: int = 20, seed: int = 0,
                         interpret: bool | None = None) -> dict[str, float]:
    """Median seconds per call of the jitted "pallas" and "xla" mixes on `random_rewards`, and
    how far the kernel's outputs are from the reference's (max |difference| of the advantages
    and of the z-scores; whether the judged and constant flags agree everywhere).

    On CPU the kernel runs in interpret mode, so its timing says nothing about a device.
    """
    rewards_bgk = jnp.asarray(random_rewards(batch, group, channels, seed))
    spec = MixSpec(mode, 0, min(1, channels - 1))
    figures, outputs = {}, {}
    for impl in ("pallas", "xla"):
        fn = jax.jit(functools.partial(mixed_advantage, spec=spec, impl=impl, block_b=block_b,
                                       interpret=interpret))
        outputs[impl] = jax.block_until_ready(fn(rewards_bgk))
        seconds = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(fn(rewards_bgk))
            seconds.append(time.perf_counter() - start)
        figures[f"{impl}_s"] = float(np.median(seconds))
    kernel, reference = outputs["pallas"], outputs["xla"]
    figures.update(
        batch=batch, group=group, channels=channels, block_b=block_b, mode=mode,
        max_abs_diff_adv=float(jnp.max(jnp.abs(kernel.adv_bg - reference.adv_bg))),
        max_abs_diff_z=float(jnp.max(jnp.abs(kernel.z_bgk - reference.z_bgk))),
        flags_match=bool(jnp.all(kernel.judged_bk == reference.judged_bk)
                         & jnp.all(kernel.constant_bk == reference.constant_bk)),
        all_finite=bool(jnp.all(jnp.isfinite(kernel.adv_bg))),
    )
    return figures
