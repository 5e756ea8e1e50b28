"""Reward mixing: the advantage estimators of algorithms.md section 4, registered by name.

Each estimator maps rewards R [B, G, K] (NaN = not judged) plus its state to advantages A [B, G]:

    estimator = ESTIMATORS.build(name, channels, **overrides)  # defaults: rl/defaults.py
    state = estimator.init_state()                          # TrainState.extra["estimator"]
    adv_bg, state, stats = estimator(rewards_bgk, state, gram_kk=gram_kk)

`__call__` is pure and jittable. The gradient estimators (popo, mgda; `needs_gradients`) take
gram_kk[k, j] = <g_k, g_j>, where g_k is the gradient at pi_old of the policy loss whose
advantage is `channel_advantages(R)[..., k]`; the caller computes it once per rollout batch.
An unjudged channel is dropped for that request: weighted mixes renormalise the remaining weights
(keeping their total), A2PO falls back to the business advantage. The mixing step itself is
`pallas_advantage.mixed_advantage` (option impl "xla" or "pallas", the same math).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from sgrec_jax.core.group_stats import EPS, group_stats
from sgrec_jax.core.registry import Registry
from sgrec_jax.rewards.channel import KINDS
from sgrec_jax.rl.pallas_advantage import MixResult, MixSpec, a2po_lambda, mixed_advantage

IMPLS = ("xla", "pallas")


@dataclasses.dataclass(frozen=True)
class ChannelSpec:
    """What an estimator knows of a reward channel: its name, declared range and kind."""

    name: str
    low: float
    high: float
    kind: str  # "business" | "semantic" | "truth"

    def __post_init__(self):
        if not self.low < self.high:
            raise ValueError(f"channel {self.name!r}: low {self.low} must be < high {self.high}")
        if self.kind not in KINDS:
            raise ValueError(f"channel {self.name!r}: kind {self.kind!r} not in {KINDS}")

    @classmethod
    def of(cls, channel: Any) -> ChannelSpec:
        """The spec of any object with name, low, high and kind (e.g. a RewardChannel)."""
        return cls(channel.name, float(channel.low), float(channel.high), channel.kind)


def channel_advantages(rewards_bgk: jax.Array) -> jax.Array:
    """float32 [B, G, K]: z_G of each channel alone (0 where unjudged or constant)."""
    z_bkg = group_stats(jnp.moveaxis(rewards_bgk, -1, 1)).z_bg
    return jnp.moveaxis(z_bkg, 1, -1)


def floor_simplex(p_k: jax.Array, w_min: float) -> jax.Array:
    """The distribution p [K] with every entry raised to at least w_min (needs K * w_min <= 1).

    Entries below the floor are pinned to it and the rest keep their proportions, so weights
    already above the floor are only rescaled (no pull toward uniform).
    """
    k = p_k.shape[-1]
    low_k = jnp.zeros(p_k.shape, bool)
    w_k = p_k
    for _ in range(k):  # each pass pins at least one more entry or changes nothing
        free_mass = 1.0 - w_min * jnp.sum(low_k)
        free_p = jnp.sum(jnp.where(low_k, 0.0, p_k))
        w_k = jnp.where(low_k, w_min, p_k * free_mass / jnp.maximum(free_p, 1e-30))
        low_k = low_k | (w_k < w_min)
    return w_k


def normalise(x_k: jax.Array) -> jax.Array:
    """x / sum(x) for x >= 0; uniform when the sum is 0."""
    total = jnp.sum(x_k)
    return jnp.where(total > 0.0, x_k / jnp.where(total > 0.0, total, 1.0), 1.0 / x_k.shape[-1])


def min_norm_2(gram_22: jax.Array) -> jax.Array:
    """alpha [2]: the min-norm point of the segment [g_1, g_2] in closed form."""
    g11, g12, g22 = gram_22[0, 0], gram_22[0, 1], gram_22[1, 1]
    denom = g11 + g22 - 2.0 * g12
    a1 = jnp.where(denom > 0.0, jnp.clip((g22 - g12) / jnp.where(denom > 0.0, denom, 1.0),
                                         0.0, 1.0), 0.5)
    return jnp.stack([a1, 1.0 - a1])


def min_norm_frank_wolfe(gram_kk: jax.Array, steps: int = 100) -> jax.Array:
    """alpha [K]: the min-norm point of the convex hull of the g_k, min alpha^T gram alpha on the
    simplex, by Frank-Wolfe with away steps and exact line search, from the uniform point.

    Plain Frank-Wolfe (Sener & Koltun 2018) zig-zags at a rate O(1/t) when the optimum lies on a
    face of the simplex; away steps make the convergence linear.
    """
    k = gram_kk.shape[0]
    eye_kk = jnp.eye(k, dtype=jnp.float32)

    def step(_, alpha_k):
        grad_k = gram_kk @ alpha_k
        toward = jnp.argmin(grad_k)
        away = jnp.argmax(jnp.where(alpha_k > 0.0, grad_k, -jnp.inf))
        d_fw = eye_kk[toward] - alpha_k
        d_away = alpha_k - eye_kk[away]
        use_fw = -grad_k @ d_fw >= -grad_k @ d_away
        d_k = jnp.where(use_fw, d_fw, d_away)
        a_away = alpha_k[away]
        gamma_max = jnp.where(use_fw, 1.0, a_away / jnp.maximum(1.0 - a_away, 1e-12))
        curvature = d_k @ gram_kk @ d_k
        gamma = jnp.where(curvature > 0.0, -(d_k @ grad_k) / jnp.where(
            curvature > 0.0, curvature, 1.0), gamma_max)
        alpha_k = alpha_k + jnp.clip(gamma, 0.0, gamma_max) * d_k
        return jnp.maximum(alpha_k, 0.0)

    return jax.lax.fori_loop(0, steps, step, jnp.full((k,), 1.0 / k, jnp.float32))


def _nan_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """num / den, NaN when den is 0 (the statistic is undefined for this batch)."""
    return jnp.where(den > 0, num / jnp.where(den > 0, den, 1), jnp.nan)


class Estimator:
    """Base class: options, channel bookkeeping, the mix call and the common statistics.

    Subclasses implement `_advantage`. `options` is every option of the estimator, as
    `ESTIMATORS.build` resolves them from its registered defaults (rl/defaults.py).
    """

    needs_gradients: ClassVar[bool] = False

    def __init__(self, channels: Sequence[ChannelSpec], options: Mapping[str, Any]):
        self.channels = tuple(channels)
        if not self.channels:
            raise ValueError(f"{type(self).__name__} needs at least one reward channel")
        self.names = tuple(c.name for c in self.channels)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"duplicate reward channel names: {self.names}")
        self.options = dict(options.items())
        if "impl" in self.options and self.options["impl"] not in IMPLS:
            raise ValueError(f"impl {self.options['impl']!r} not in {IMPLS}")

    @property
    def num_channels(self) -> int:
        return len(self.channels)

    def index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"{type(self).__name__}: no reward channel {name!r}; "
                             f"channels: {', '.join(self.names)}")
        return self.names.index(name)

    def _weights(self, default: float) -> jax.Array:
        """The `weights` option as float32 [K]: None (all `default`), {name: w} or [w_1..w_K]."""
        weights = self.options["weights"]
        if weights is None:
            return jnp.full((self.num_channels,), default, jnp.float32)
        if hasattr(weights, "items"):
            weights = dict(weights.items())
            for name in weights:
                self.index(name)
            return jnp.asarray([float(weights.get(n, 0.0)) for n in self.names], jnp.float32)
        if len(weights) != self.num_channels:
            raise ValueError(f"weights {list(weights)} do not match channels {self.names}")
        return jnp.asarray([float(w) for w in weights], jnp.float32)

    def _range_coefficients(self) -> tuple[jax.Array, jax.Array]:
        """(low_k, inv_range_k) mapping each channel's declared range to [0, 1]."""
        low_k = jnp.asarray([c.low for c in self.channels], jnp.float32)
        inv_k = jnp.asarray([1.0 / (c.high - c.low) for c in self.channels], jnp.float32)
        return low_k, inv_k

    def _mix(self, rewards_bgk: jax.Array, spec: MixSpec, weights_k=1.0, low_k=0.0,
             inv_range_k=1.0) -> MixResult:
        return mixed_advantage(rewards_bgk, spec, weights_k, low_k, inv_range_k,
                               impl=self.options["impl"], block_b=int(self.options["block_b"]))

    def _sign_pair(self) -> tuple[int, int] | None:
        """(business, semantic) channel indices for "sign_agreement", if there is one of each."""
        business = [i for i, c in enumerate(self.channels) if c.kind == "business"]
        semantic = [i for i, c in enumerate(self.channels) if c.kind == "semantic"]
        if len(business) == 1 and len(semantic) == 1:
            return business[0], semantic[0]
        return None

    def init_state(self) -> dict[str, jax.Array]:
        return {}

    def _advantage(self, rewards_bgk: jax.Array, state: dict[str, jax.Array],
                   gram_kk: jax.Array | None):
        """-> (adv_bg, new_state, MixResult, extra stats)."""
        raise NotImplementedError

    def __call__(self, rewards_bgk: jax.Array, state: Mapping[str, jax.Array], *,
                 gram_kk: jax.Array | None = None):
        """(adv_bg float32 [B, G], new_state, stats: dict of float32 scalars)."""
        rewards_bgk = jnp.asarray(rewards_bgk, jnp.float32)
        if rewards_bgk.ndim != 3 or rewards_bgk.shape[-1] != self.num_channels:
            raise ValueError(f"rewards must be [B, G, K={self.num_channels}] "
                             f"({', '.join(self.names)}), got {rewards_bgk.shape}")
        if self.needs_gradients:
            if gram_kk is None:
                raise ValueError(f"{type(self).__name__} needs gram_kk: the Gram matrix of the "
                                 "per-channel policy-loss gradients (see channel_advantages)")
            gram_kk = jnp.asarray(gram_kk, jnp.float32)
            k = self.num_channels
            if gram_kk.shape != (k, k):
                raise ValueError(f"gram_kk must be [{k}, {k}], got {gram_kk.shape}")
        adv_bg, new_state, mix, extra = self._advantage(rewards_bgk, dict(state), gram_kk)
        return adv_bg, new_state, {**self._stats(rewards_bgk, mix), **extra}

    def _stats(self, rewards_bgk: jax.Array, mix: MixResult) -> dict[str, jax.Array]:
        stats = {}
        judged_k = jnp.sum(mix.judged_bk, axis=0)
        constant_k = jnp.sum(mix.constant_bk, axis=0)
        batch = rewards_bgk.shape[0]
        for k, name in enumerate(self.names):
            r = rewards_bgk[..., k]
            stats[f"reward/{name}/mean"] = jnp.nanmean(r)
            stats[f"reward/{name}/std"] = jnp.nanstd(r)
            stats[f"zero_std_frac/{name}"] = _nan_ratio(constant_k[k], judged_k[k])
            stats[f"judged_frac/{name}"] = judged_k[k] / batch
        pair = self._sign_pair()
        if pair is not None:
            a_b, a_s = mix.z_bgk[..., pair[0]], mix.z_bgk[..., pair[1]]
            both = (a_b != 0.0) & (a_s != 0.0)
            agree = both & ((a_b > 0.0) == (a_s > 0.0))
            stats["sign_agreement"] = _nan_ratio(jnp.sum(agree), jnp.sum(both))
            stats["sign_agreement/pairs"] = jnp.sum(both).astype(jnp.float32)
        return stats

    def _weight_stats(self, weights_k: jax.Array, prefix: str = "weights") -> dict:
        return {f"{prefix}/{n}": weights_k[k] for k, n in enumerate(self.names)}


# Filled by sgrec_jax/registration.py, each class with its options' defaults (rl/defaults.py).
ESTIMATORS: Registry[type[Estimator]] = Registry("advantage estimator")


class Single(Estimator):
    """A = z_G(r_k) for one channel (plain GRPO). channel None: the only channel, or the only
    business channel."""

    def __init__(self, channels, options):
        super().__init__(channels, options)
        name = self.options["channel"]
        if name is None:
            business = [c.name for c in self.channels if c.kind == "business"]
            if len(self.channels) == 1:
                name = self.names[0]
            elif len(business) == 1:
                name = business[0]
            else:
                raise ValueError(f"single: set option 'channel' (one of {', '.join(self.names)})")
        self.channel = self.index(name)

    def _advantage(self, rewards_bgk, state, gram_kk):
        mix = self._mix(rewards_bgk, MixSpec("advantages"),
                        jax.nn.one_hot(self.channel, self.num_channels))
        return mix.adv_bg, state, mix, {}


class WeightedSum(Estimator):
    """A = z_G(sum_k w_k r_k), fixed w (weights None: uniform, Taiji's 0.5/0.5 for K = 2)."""

    def _advantage(self, rewards_bgk, state, gram_kk):
        weights_k = self._weights(1.0 / self.num_channels)
        mix = self._mix(rewards_bgk, MixSpec("rewards"), weights_k)
        return mix.adv_bg, state, mix, self._weight_stats(weights_k)


class AdvSum(Estimator):
    """A = sum_k w_k z_G(r_k) (S-GRec's Adv-Sum; weights None: all 1, MO-GRPO)."""

    def _advantage(self, rewards_bgk, state, gram_kk):
        weights_k = self._weights(1.0)
        mix = self._mix(rewards_bgk, MixSpec("advantages"), weights_k)
        return mix.adv_bg, state, mix, self._weight_stats(weights_k)


class Gdpo(AdvSum):
    """adv_sum divided by its std over the whole batch (no re-centring: constant groups stay 0)."""

    def _advantage(self, rewards_bgk, state, gram_kk):
        adv_bg, state, mix, stats = super()._advantage(rewards_bgk, state, gram_kk)
        std = jnp.std(adv_bg)
        return adv_bg / (std + EPS), state, mix, {**stats, "gdpo/batch_std": std}


class A2po(Estimator):
    """A = A_b + lam * A_s with lam = 1[sign A_b = sign A_s] min(|A_b|,|A_s|)/(max + eps)
    (S-GRec); A = A_b where the semantic channel is not judged. semantic None: the only channel
    of kind "semantic". Other channels are logged but not mixed."""

    def __init__(self, channels, options):
        super().__init__(channels, options)
        self.business = self.index(self.options["business"])
        semantic = self.options["semantic"]
        if semantic is None:
            names = [c.name for c in self.channels if c.kind == "semantic"]
            if len(names) != 1:
                raise ValueError(f"a2po: set option 'semantic' (channels: {', '.join(self.names)})")
            semantic = names[0]
        self.semantic = self.index(semantic)
        if self.semantic == self.business:
            raise ValueError("a2po: business and semantic must be different channels")

    def _sign_pair(self):
        return self.business, self.semantic

    def _advantage(self, rewards_bgk, state, gram_kk):
        mix = self._mix(rewards_bgk, MixSpec("a2po", self.business, self.semantic))
        a_b, a_s = mix.z_bgk[..., self.business], mix.z_bgk[..., self.semantic]
        judged_b1 = mix.judged_bk[:, self.semantic][:, None]
        lam_bg = a2po_lambda(a_b, a_s)
        lam_mean = _nan_ratio(jnp.sum(jnp.where(judged_b1, lam_bg, 0.0)),
                              jnp.sum(judged_b1) * rewards_bgk.shape[1])
        return mix.adv_bg, state, mix, {"a2po/lambda_mean": lam_mean}


class _SimplexMix(Estimator):
    """Shared by popo_light and popo: weights on the simplex floored at w_min, mixing rewards.

    mix_space "mapped" (default) mixes the rewards mapped to [0, 1] by their declared ranges,
    r~_k = (r_k - low_k) / (high_k - low_k), the space popo_light measures its weights in;
    "raw" mixes r_k as algorithms.md writes it (a channel with a wide range then dominates
    whatever its weight). Either way z_G removes the offsets, so only the scales differ.
    """

    def __init__(self, channels, options):
        super().__init__(channels, options)
        self.w_min = float(self.options["w_min"])
        if not 0.0 <= self.w_min * self.num_channels <= 1.0:
            raise ValueError(f"w_min {self.w_min} * K = {self.num_channels} must lie in [0, 1]")
        if self.options["mix_space"] not in ("mapped", "raw"):
            raise ValueError(f"mix_space {self.options['mix_space']!r} not in ('mapped', 'raw')")

    def _mix_weights(self, rewards_bgk: jax.Array, weights_k: jax.Array) -> MixResult:
        low_inv = self._range_coefficients() if self.options["mix_space"] == "mapped" else ()
        return self._mix(rewards_bgk, MixSpec("rewards"), weights_k, *low_inv)


class PopoLight(_SimplexMix):
    """w_k ∝ sigma_k / (mu_k + eps) of each channel's rewards mapped to [0, 1] by its declared
    range, over the batch's finite values (EMA with decay `ema`; 0 = this batch only), floored
    at w_min on the simplex; A = z_G(sum_k w_k r_k) over the judged channels (Taiji)."""

    def __init__(self, channels, options):
        super().__init__(channels, options)
        if not 0.0 <= float(self.options["ema"]) < 1.0:
            raise ValueError(f"ema {self.options['ema']} must lie in [0, 1)")

    def init_state(self):
        return {"cv_k": jnp.zeros((self.num_channels,), jnp.float32),
                "steps": jnp.zeros((), jnp.int32)}

    def _advantage(self, rewards_bgk, state, gram_kk):
        low_k, inv_k = self._range_coefficients()
        mapped_nk = ((rewards_bgk - low_k) * inv_k).reshape(-1, self.num_channels)
        seen_k = jnp.any(jnp.isfinite(mapped_nk), axis=0)
        cv_k = jnp.nanstd(mapped_nk, axis=0) / (jnp.nanmean(mapped_nk, axis=0) + EPS)
        # A channel with no judged reward in this batch keeps its running value.
        cv_k = jnp.where(seen_k, jnp.maximum(cv_k, 0.0), state["cv_k"])
        decay = float(self.options["ema"])
        cv_k = jnp.where(state["steps"] > 0, decay * state["cv_k"] + (1.0 - decay) * cv_k, cv_k)
        weights_k = floor_simplex(normalise(cv_k), self.w_min)
        mix = self._mix_weights(rewards_bgk, weights_k)
        new_state = {"cv_k": cv_k, "steps": state["steps"] + 1}
        return mix.adv_bg, new_state, mix, self._weight_stats(weights_k)


class Popo(_SimplexMix):
    """Exponentiated gradient on the simplex (Taiji): I_k = sum_j gram[k, j] = <g_k, sum_j g_j>,
    w~_k <- w_k exp(eta I_k / mu), normalised and floored at w_min; init 1/K; then
    A = z_G(sum_k w_k r_k) with the updated weights. mu "norm" (default) is mean_k |I_k| + eps,
    which makes eta dimensionless; a positive number is used as is."""

    needs_gradients = True

    def __init__(self, channels, options):
        super().__init__(channels, options)
        mu = self.options["mu"]
        if mu != "norm" and not (isinstance(mu, (int, float)) and mu > 0):
            raise ValueError(f"mu must be 'norm' or a positive number, got {mu!r}")

    def init_state(self):
        k = self.num_channels
        return {"weights_k": jnp.full((k,), 1.0 / k, jnp.float32)}

    def _advantage(self, rewards_bgk, state, gram_kk):
        alignment_k = jnp.sum(gram_kk, axis=1)
        mu = self.options["mu"]
        mu = jnp.mean(jnp.abs(alignment_k)) + EPS if mu == "norm" else float(mu)
        step_k = float(self.options["eta"]) * alignment_k / mu
        # exp(step - max) is the same update after normalisation, and cannot overflow.
        tilted_k = state["weights_k"] * jnp.exp(step_k - jnp.max(step_k))
        weights_k = floor_simplex(normalise(tilted_k), self.w_min)
        mix = self._mix_weights(rewards_bgk, weights_k)
        stats = {**self._weight_stats(weights_k), **self._weight_stats(alignment_k, "popo/I")}
        return mix.adv_bg, {"weights_k": weights_k}, mix, stats


class Mgda(Estimator):
    """alpha = min-norm point of the convex hull of the per-channel gradients (closed form for
    K = 2, Frank-Wolfe for K > 2 or with solver "frank_wolfe"); A = sum_k alpha_k z_G(r_k)."""

    needs_gradients = True

    def __init__(self, channels, options):
        super().__init__(channels, options)
        if self.options["solver"] not in ("auto", "frank_wolfe"):
            raise ValueError(f"solver {self.options['solver']!r} not in ('auto', 'frank_wolfe')")

    def min_norm_weights(self, gram_kk: jax.Array) -> jax.Array:
        if self.num_channels == 1:
            return jnp.ones((1,), jnp.float32)
        if self.num_channels == 2 and self.options["solver"] == "auto":
            return min_norm_2(gram_kk)
        return min_norm_frank_wolfe(gram_kk, int(self.options["fw_steps"]))

    def _advantage(self, rewards_bgk, state, gram_kk):
        alpha_k = self.min_norm_weights(gram_kk)
        mix = self._mix(rewards_bgk, MixSpec("advantages"), alpha_k)
        return mix.adv_bg, state, mix, self._weight_stats(alpha_k)
