import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.rl import estimators
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec, channel_advantages

NAN = float("nan")
ECPM = ChannelSpec("ecpm", 0.0, 10.0, "business")
PSJ = ChannelSpec("psj", 0.0, 1.0, "semantic")
CHANNELS = (ECPM, PSJ)
GRAM = np.array([[1.0, 0.3], [0.3, 0.5]], np.float32)
S5 = np.sqrt(5.0)


_JITTED = {}


def run_many(variants, rewards, channels=CHANNELS, gram=GRAM, states=None):
    """Several estimators, variants {label: (name, options)}, in ONE jitted call (one compile;
    cached, so a repeated call on the same shapes compiles nothing).

    Returns {label: (adv numpy, new state, stats as floats)}.
    """
    key = (repr(variants), channels)
    if key not in _JITTED:
        estimators = {label: ESTIMATORS.build(name, channels, **(options or {}))
                      for label, (name, options) in variants.items()}
        _JITTED[key] = estimators, jax.jit(lambda r, s, g: {
            label: e(r, s[label], gram_kk=g) for label, e in estimators.items()})
    estimators, fn = _JITTED[key]
    states = states or {label: e.init_state() for label, e in estimators.items()}
    outs = fn(jnp.asarray(rewards, jnp.float32), states, jnp.asarray(gram))
    return {label: (np.asarray(adv), state, {k: float(v) for k, v in stats.items()})
            for label, (adv, state, stats) in outs.items()}


def run(name, rewards, options=None, gram=GRAM, state=None):
    """One estimator call -> (adv numpy, new state, stats as floats)."""
    states = None if state is None else {name: state}
    return run_many({name: (name, options)}, rewards, gram=gram, states=states)[name]


def run_all(rewards, gram=GRAM):
    """Every estimator with default options on CHANNELS -> {name: (adv, stats)}."""
    outs = run_many({n: (n, None) for n in ESTIMATORS.names()}, rewards, gram=gram)
    return {n: (adv, stats) for n, (adv, _, stats) in outs.items()}


def z(v):
    v = np.asarray(v, np.float64)
    return (v - v.mean(-1, keepdims=True)) / (v.std(-1, keepdims=True) + 1e-6)


def stack(*channels_bg):
    return np.stack(channels_bg, axis=-1).astype(np.float32)


def random_rewards(seed, b=6, g=5):
    rng = np.random.default_rng(seed)
    return stack(rng.uniform(0, 10, (b, g)), rng.uniform(0, 1, (b, g)))


def test_registry_and_options():
    assert ESTIMATORS.names() == sorted(
        ["single", "weighted_sum", "adv_sum", "gdpo", "a2po", "popo_light", "popo", "mgda"])
    assert ESTIMATORS.options("a2po")["business"] == "ecpm"
    for name in ESTIMATORS.names():
        assert ESTIMATORS.options(name)["impl"] == "xla"
    with pytest.raises(UnknownNameError, match="valid names"):
        ESTIMATORS.get("nope")
    with pytest.raises(ValueError, match=r"unknown option\(s\) weigths for advantage estimator "
                       r"'adv_sum'; valid options: block_b, impl, weights"):
        ESTIMATORS.build("adv_sum", CHANNELS, weigths=None)
    with pytest.raises(ValueError, match="no reward channel 'hit'"):
        ESTIMATORS.build("a2po", CHANNELS, business="hit")
    with pytest.raises(ValueError, match="low"):
        ChannelSpec("x", 1.0, 1.0, "business")


def test_gradient_estimators_need_gram_and_shapes_are_checked():
    for name in ("popo", "mgda"):
        estimator = ESTIMATORS.build(name, CHANNELS)
        assert estimator.needs_gradients
        with pytest.raises(ValueError, match="needs gram_kk"):
            estimator(random_rewards(0), estimator.init_state())
    assert not ESTIMATORS.build("popo_light", CHANNELS).needs_gradients
    with pytest.raises(ValueError, match=r"\[B, G, K=2\]"):
        ESTIMATORS.build("single", CHANNELS)(np.zeros((2, 3, 3)), {})


def test_a2po_hand_worked_example():
    # z_b = (-3, -1, 1, 3)/sqrt5; z_s = (-3, -2, -1, 6)/sqrt12.5.
    rewards = stack([[0.0, 2.0, 4.0, 6.0]], [[0.0, 0.1, 0.2, 0.9]])
    adv, _, stats = run("a2po", rewards)
    # item 0: |A_s| < |A_b|, lam*A_s = -A_s^2/|A_b| = -0.72/(3/sqrt5); items 1, 3: |A_s| > |A_b|,
    # so lam*A_s = A_b; item 2: opposite signs, lam = 0.
    expected = [-3 / S5 - 0.72 * S5 / 3, -2 / S5, 1 / S5, 6 / S5]
    np.testing.assert_allclose(adv[0], expected, rtol=1e-4)
    lam = [np.sqrt(0.72) / (3 / S5), (1 / S5) / (2 / np.sqrt(12.5)), 0.0,
           (3 / S5) / (6 / np.sqrt(12.5))]
    np.testing.assert_allclose(stats["a2po/lambda_mean"], np.mean(lam), rtol=1e-4)
    assert stats["sign_agreement"] == pytest.approx(0.75)
    assert stats["sign_agreement/pairs"] == 4.0


def test_a2po_never_flips_or_shrinks_the_business_advantage():
    rewards = random_rewards(1)
    adv, stats = run_all(rewards)["a2po"]
    z_bgk = np.asarray(jax.jit(channel_advantages)(jnp.asarray(rewards)))
    a_b, a_s = z_bgk[..., 0], z_bgk[..., 1]
    boost = adv - a_b
    assert np.all(np.sign(adv) == np.sign(a_b))
    assert np.all(np.abs(adv) >= np.abs(a_b) - 1e-6)
    assert np.all(np.abs(boost) <= np.abs(a_b) + 1e-5)
    # The property is not vacuous: lam > 0 on many items.
    assert np.mean(np.abs(boost) > 1e-3) > 0.25 and stats["a2po/lambda_mean"] > 0.1
    np.testing.assert_allclose(boost[(np.sign(a_b) != np.sign(a_s))], 0.0, atol=1e-6)


def test_a2po_falls_back_to_business_where_semantic_is_unjudged():
    rewards = random_rewards(2)
    rewards[1, 2, 1] = NAN
    rewards[2:, :, 1] = NAN
    adv, stats = run_all(rewards)["a2po"]
    a_b = np.asarray(jax.jit(channel_advantages)(jnp.asarray(rewards)))[..., 0]
    np.testing.assert_allclose(adv[1:], a_b[1:], rtol=1e-6)
    assert np.abs(adv[0] - a_b[0]).max() > 1e-3
    assert stats["judged_frac/psj"] == pytest.approx(1 / 6)
    assert stats["judged_frac/ecpm"] == 1.0


def test_single_weighted_sum_adv_sum_gdpo_hand_computed():
    b = np.array([[0.0, 2.0, 4.0, 6.0], [1.0, 1.0, 1.0, 1.0]])
    s = np.array([[0.0, 0.1, 0.2, 0.9], [0.5, 0.1, 0.2, 0.2]])
    out = run_many({
        "single": ("single", None),  # the only business channel
        "single_psj": ("single", {"channel": "psj"}),
        "weighted_sum": ("weighted_sum", {"weights": {"ecpm": 0.2, "psj": 0.8}}),
        "adv_sum": ("adv_sum", {"weights": [1.0, 2.0]}),
        "gdpo": ("gdpo", {"weights": [1.0, 2.0]}),
    }, stack(b, s))
    np.testing.assert_allclose(out["single"][0], [[-3 / S5, -1 / S5, 1 / S5, 3 / S5], [0] * 4],
                               rtol=1e-5)
    np.testing.assert_allclose(out["single_psj"][0], z(s), rtol=1e-4)
    np.testing.assert_allclose(out["weighted_sum"][0], z(0.2 * b + 0.8 * s), rtol=1e-4,
                               atol=1e-6)
    assert out["weighted_sum"][2]["weights/psj"] == pytest.approx(0.8)
    expected = z(b) * [[1], [0]] + 2 * z(s)
    np.testing.assert_allclose(out["adv_sum"][0], expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(out["gdpo"][0], expected / (expected.std() + 1e-6), rtol=1e-4,
                               atol=1e-6)
    stats = out["gdpo"][2]
    assert stats["zero_std_frac/ecpm"] == 0.5 and stats["zero_std_frac/psj"] == 0.0


def test_weighted_mixes_drop_unjudged_channels_and_renormalise():
    # run_all always sees [6, 5] rewards, so it compiles once for the whole module.
    rewards = random_rewards(3)
    rewards[1, 0, 1] = NAN
    out = run_all(rewards)
    np.testing.assert_allclose(out["weighted_sum"][0][1], z(rewards[1, :, 0]), rtol=1e-4)
    np.testing.assert_allclose(out["weighted_sum"][0][0], z(rewards[0].mean(-1)), rtol=1e-4)
    # adv_sum keeps the total weight (2) on the judged channel; mgda's alpha sums to 1.
    np.testing.assert_allclose(out["adv_sum"][0][1], 2 * z(rewards[1, :, 0]), rtol=1e-4)
    np.testing.assert_allclose(out["mgda"][0][1], z(rewards[1, :, 0]), rtol=1e-4)
    rewards[:, 0, :] = NAN
    for name, (adv, stats) in run_all(rewards).items():
        assert np.all(adv == 0.0), name
        assert stats["judged_frac/psj"] == 0.0 and np.isnan(stats["zero_std_frac/psj"])


def test_invariant_to_a_constant_added_to_one_channel():
    rewards = random_rewards(4, b=2)
    # One batch holds the rewards and both shifted copies: z_G works per request, and the batch
    # level steps (gdpo's std, popo's weights from the same Gram) see three equal copies.
    b = rewards.shape[0]
    batch = np.concatenate([rewards, rewards + [3.7, 0.0], rewards + [0.0, 0.37]])
    for name, (adv, _) in run_all(batch).items():
        if name == "popo_light":
            continue
        assert np.abs(adv[:b]).max() > 0.1, name
        np.testing.assert_allclose(adv[b:2 * b], adv[:b], atol=1e-4, err_msg=name)
        np.testing.assert_allclose(adv[2 * b:], adv[:b], atol=1e-4, err_msg=name)


def test_popo_light_is_not_shift_invariant_and_a_constant_group_is_zero_everywhere():
    rewards = random_rewards(5)
    shifted = rewards.copy()
    shifted[..., 1] += 0.37
    w = run_all(rewards)["popo_light"][1]["weights/psj"]
    assert run_all(shifted)["popo_light"][1]["weights/psj"] != pytest.approx(w, abs=1e-3)
    rewards[0] = [3.0, 0.5]
    rewards[1] = 0.7
    for name, (adv, stats) in run_all(rewards).items():
        assert np.all(adv[:2] == 0.0), name
        assert np.abs(adv[2:]).max() > 0.1, name
        assert stats["zero_std_frac/ecpm"] == pytest.approx(2 / 6)


def test_popo_light_weights_by_coefficient_of_variation_with_ema():
    # Mapped to [0, 1]: ecpm (range 0..10) {4, 5, 6} -> {.4, .5, .6}, psj {0, .5, 1}: same mean,
    # std ratio 1:5, so w = (1/6, 5/6).
    rewards = stack([[4.0, 5.0, 6.0]], [[0.0, 0.5, 1.0]])
    out = run_many({"mapped": ("popo_light", None),
                    "raw": ("popo_light", {"mix_space": "raw"})}, rewards)
    adv, state, stats = out["mapped"]
    weights = np.array([1.0, 5.0]) / 6.0
    np.testing.assert_allclose([stats["weights/ecpm"], stats["weights/psj"]], weights, rtol=1e-4)
    mix = weights[0] * rewards[0, :, 0] / 10 + weights[1] * rewards[0, :, 1]
    np.testing.assert_allclose(adv[0], z(mix), rtol=1e-4, atol=1e-6)
    raw = out["raw"][0]
    np.testing.assert_allclose(raw[0], z(weights @ rewards[0].T), rtol=1e-4, atol=1e-6)
    # EMA: the second batch's cv (psj only varies) is averaged with the first.
    second = stack([[5.0, 5.0, 5.0]], [[0.0, 0.5, 1.0]])
    _, state, stats = run("popo_light", second, options={"ema": 0.5}, state=state)
    first = np.array([np.std([0.4, 0.5, 0.6]), np.std([0.0, 0.5, 1.0])]) / 0.5
    cv = 0.5 * first + 0.5 * np.array([0.0, first[1]])
    np.testing.assert_allclose(state["cv_k"], cv, rtol=1e-4)
    assert int(state["steps"]) == 2
    assert stats["weights/ecpm"] == pytest.approx(cv[0] / cv.sum(), rel=1e-4)


def test_floor_simplex():
    floor_simplex = jax.jit(estimators.floor_simplex, static_argnums=1)
    np.testing.assert_allclose(floor_simplex(jnp.array([0.98, 0.01, 0.01]), 0.05),
                               [0.9, 0.05, 0.05], rtol=1e-6)
    np.testing.assert_allclose(floor_simplex(jnp.array([0.6, 0.3, 0.1]), 0.05), [0.6, 0.3, 0.1])
    w = np.asarray(floor_simplex(jnp.array([0.9, 0.06, 0.04, 0.0]), 0.1))
    assert w.min() >= 0.1 - 1e-7 and w.sum() == pytest.approx(1.0)
    assert w[1] == pytest.approx(0.1)


def test_popo_exponentiated_gradient_moves_toward_the_aligned_channel():
    rewards = random_rewards(6)
    # g_ecpm = (1, 0), g_psj = (-0.2, 0.3): ecpm aligns with the sum, psj against it.
    g = np.array([[1.0, 0.0], [-0.2, 0.3]])
    gram = (g @ g.T).astype(np.float32)
    alignment = gram.sum(1)
    assert alignment[0] > 0 > alignment[1]
    out = run_many({"norm": ("popo", None), "fixed": ("popo", {"mu": 2.0})}, rewards, gram=gram)
    adv, state, stats = out["norm"]
    step = 0.1 * alignment / np.abs(alignment).mean()
    expected = 0.5 * np.exp(step) / (0.5 * np.exp(step)).sum()
    np.testing.assert_allclose(state["weights_k"], expected, rtol=1e-5)
    assert stats["popo/I/ecpm"] == pytest.approx(alignment[0], rel=1e-5)
    mix = expected[0] * rewards[..., 0] / 10 + expected[1] * rewards[..., 1]
    np.testing.assert_allclose(adv, z(mix), rtol=1e-3, atol=1e-5)
    for _ in range(30):
        _, state, _ = run("popo", rewards, gram=gram, state=state, options={"eta": 0.5})
    # Repeated steps drive psj down to the floor, never below.
    np.testing.assert_allclose(state["weights_k"], [0.95, 0.05], rtol=1e-5)
    fixed = out["fixed"][1]["weights_k"]
    expected = np.exp(0.1 * alignment / 2.0) / np.exp(0.1 * alignment / 2.0).sum()
    np.testing.assert_allclose(fixed, expected, rtol=1e-5)


def test_mgda_min_norm_point():
    min_norm_2 = jax.jit(estimators.min_norm_2)
    min_norm_frank_wolfe = jax.jit(estimators.min_norm_frank_wolfe)
    np.testing.assert_allclose(min_norm_2(jnp.eye(2)), [0.5, 0.5])
    # g_2 = 2 g_1: the min-norm point of the segment is g_1.
    np.testing.assert_allclose(min_norm_2(jnp.array([[1.0, 2.0], [2.0, 4.0]])), [1.0, 0.0])
    # g_1 = (1, 0), g_2 = (0, 2): alpha_1 = 4/5 gives (0.8, 0.4), orthogonal to g_1 - g_2.
    np.testing.assert_allclose(min_norm_2(jnp.array([[1.0, 0.0], [0.0, 4.0]])), [0.8, 0.2],
                               rtol=1e-6)
    rng = np.random.default_rng(7)
    for _ in range(3):
        g = rng.normal(size=(2, 5))
        gram = jnp.asarray(g @ g.T, jnp.float32)
        np.testing.assert_allclose(min_norm_frank_wolfe(gram), min_norm_2(gram), atol=1e-5)
    g = rng.normal(size=(3, 2))
    gram = g @ g.T
    alpha = np.asarray(min_norm_frank_wolfe(jnp.asarray(gram, jnp.float32)))
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201)), -1).reshape(-1, 2)
    grid = np.concatenate([grid, 1 - grid.sum(1, keepdims=True)], 1)
    grid = grid[grid[:, 2] >= 0]
    best = np.einsum("ni,ij,nj->n", grid, gram, grid).min()
    assert alpha @ gram @ alpha <= best + 1e-4
    np.testing.assert_allclose(alpha.sum(), 1.0, rtol=1e-6)


def test_mgda_advantage_uses_alpha():
    rewards = random_rewards(8)
    gram = np.array([[1.0, 0.0], [0.0, 4.0]], np.float32)
    out = run_many({"auto": ("mgda", None), "fw": ("mgda", {"solver": "frank_wolfe"})},
                   rewards, gram=gram)
    adv, _, stats = out["auto"]
    assert stats["weights/ecpm"] == pytest.approx(0.8)
    np.testing.assert_allclose(adv, 0.8 * z(rewards[..., 0]) + 0.2 * z(rewards[..., 1]),
                               rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(out["fw"][0], adv, atol=1e-5)


def test_reward_stats_are_nan_aware():
    rewards = stack([[1.0, 2.0, 3.0], [3.0, 3.0, 3.0]], [[0.5, NAN, 0.1], [0.2, 0.2, 0.4]])
    _, _, stats = run("weighted_sum", rewards)
    assert stats["reward/ecpm/mean"] == pytest.approx(2.5)
    assert stats["reward/psj/mean"] == pytest.approx(0.28)
    assert stats["reward/psj/std"] == pytest.approx(np.std([0.5, 0.1, 0.2, 0.2, 0.4]), rel=1e-5)
    assert stats["zero_std_frac/ecpm"] == 0.5 and stats["judged_frac/psj"] == 0.5
    assert "sign_agreement" in stats
    # Two business channels: no single business/semantic pair to compare signs of.
    three = (ECPM, ChannelSpec("hit", 0.0, 1.0, "business"), PSJ)
    rewards = np.concatenate([rewards[..., :1], rewards[..., :1] / 10, rewards[..., 1:]], -1)
    stats = run_many({"a": ("adv_sum", None)}, rewards, channels=three, gram=np.eye(3))["a"][2]
    assert "sign_agreement" not in stats and stats["weights/hit"] == 1.0
    assert stats["zero_std_frac/hit"] == 0.5
