"""The clipped GRPO loss with its KL penalties and NLL anchor, the per-channel gradient Gram
matrix, the jitted step (with and without its own pi_old pass)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from sgrec_jax.benchmarks.base import flops
from sgrec_jax.core.policy_gradient import exact_kl
from sgrec_jax.core.sharding import make_mesh
from sgrec_jax.data.transitions import TransitionCounts
from sgrec_jax.decoding.beam_search import constrained_beam_search_jit
from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardChannel
from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec, channel_advantages
from sgrec_jax.rl.grpo import (
    RLSettings,
    channel_gram,
    grpo_loss,
    init_extra,
    judged_mask,
    make_rl_step,
    needs_old_pass,
    param_path,
    policy_loss,
    select_params,
)
from sgrec_jax.rl.rollout import score_group, score_logits
from sgrec_jax.sid.catalog import build_catalog
from sgrec_jax.stages.sft import make_sft_loss
from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_update
from tests.fake_devices import run_on_fake_devices
from tests.models.tiny import CODES, NUM_ITEMS, SIZES, batch, tiny

B, G, L = 4, 5, len(SIZES)


@pytest.fixture(scope="module")
def catalog():
    return jax.device_put(build_catalog(CODES, SIZES))


@pytest.fixture(scope="module")
def requests(catalog):
    """A batch whose targets are each request's third beam item, so "hit" varies in the group."""
    history, mask, _ = batch(seed=2, size=B)
    beam = constrained_beam_search_jit(tiny("encoder_decoder", "item"), catalog, history, mask,
                                       beam_size=G)
    return {"history": history, "history_mask": mask, "target": beam.items_bk[:, 2],
            "user": jnp.arange(B, dtype=jnp.int32)}


def test_loss_at_pi_old_is_the_mean_advantage_and_clipping_binds_only_outside_the_range():
    logp_bgl = jax.random.normal(jax.random.key(0), (B, G, L)) - 2
    adv_bg = jax.random.normal(jax.random.key(1), (B, G))
    loss, m = grpo_loss(logp_bgl, logp_bgl, logp_bgl, adv_bg[:, :, None], clip_eps=0.2, beta=1e-3)
    assert m["ratio_mean"] == 1.0 and m["clip_frac"] == 0.0 and m["k3_beams"] == 0.0
    np.testing.assert_allclose(loss, -adv_bg.mean(), rtol=1e-6)

    # pi moved away from pi_old by +-0.5 nats per token: ratios e^0.5 and e^-0.5.
    shift_bgl = jnp.where(jnp.arange(L) % 2 == 0, 0.5, -0.5) * jnp.ones((B, G, L))
    loss, m = grpo_loss(logp_bgl + shift_bgl, logp_bgl, logp_bgl, adv_bg[:, :, None],
                        clip_eps=0.2, beta=0.0)
    ratio = np.exp(np.asarray(shift_bgl))
    a = np.asarray(adv_bg)[:, :, None]
    np.testing.assert_allclose(loss, -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.2) * a).mean(),
                               rtol=1e-5)
    binds = ((ratio > 1.2) & (a > 0)) | ((ratio < 0.8) & (a < 0))
    assert 0 < m["clip_frac"] < 1
    np.testing.assert_allclose(m["clip_frac"], binds.mean())


# A hand-built catalog: 6 items, 3 levels of 3, 3 and 2 codes (V = 3, level 2 padded).
HAND_ITEMS = np.array([[0, 0, 0], [0, 0, 1], [0, 2, 0], [1, 1, 0], [1, 1, 1], [2, 0, 0]])


def _brute_force_kl(logits, ref_logits, codes):
    """KL(pi_l || pi_ref,l) per (b, g, l) by listing each prefix's children in HAND_ITEMS
    (swap the logits for the forward KL(pi_ref,l || pi_l))."""
    out = np.zeros(codes.shape)
    for index in np.ndindex(*codes.shape):
        *bg, level = index
        prefix = tuple(codes[(*bg, slice(0, level))])
        allowed = sorted({int(i[level]) for i in HAND_ITEMS if tuple(i[:level]) == prefix})
        p = np.exp(logits[index][allowed] - np.logaddexp.reduce(logits[index][allowed]))
        q = np.exp(ref_logits[index][allowed] - np.logaddexp.reduce(ref_logits[index][allowed]))
        out[index] = (p * np.log(p / q)).sum()
    return out


def test_exact_kl_equals_a_brute_force_sum_over_a_hand_built_catalog():
    catalog = build_catalog(HAND_ITEMS, (3, 3, 2))
    codes = jnp.asarray(HAND_ITEMS[np.array([[0, 1, 2, 5], [3, 4, 0, 0]])])  # B 2, G 4
    logits = jax.random.normal(jax.random.key(0), (2, 4, 3, 3)) * 2
    ref_logits = jax.random.normal(jax.random.key(1), (2, 4, 3, 3)) * 2
    pi, ref = score_logits(logits, codes, catalog), score_logits(ref_logits, codes, catalog)
    want = _brute_force_kl(np.asarray(logits, np.float64), np.asarray(ref_logits, np.float64),
                           np.asarray(codes))
    assert (want[:, :, 0] > 0).all() and (want[:, 0, 2] > 0).all()
    assert want[1, 0, 1] == 0.0  # prefix (1,) has one child: no choice, no divergence
    np.testing.assert_allclose(exact_kl(pi.logp_bglv, ref.logp_bglv), want, rtol=1e-5,
                               atol=1e-7)
    np.testing.assert_allclose(exact_kl(pi.logp_bglv, pi.logp_bglv), 0.0, atol=1e-7)
    # In the loss: the logged kl_exact, and the penalty when kl_estimator says "exact".
    adv_bgl = jnp.zeros((2, 4, 1))
    args = (pi.token_logprob_bgl, pi.token_logprob_bgl, ref.token_logprob_bgl, adv_bgl)
    dists = dict(logp_bglv=pi.logp_bglv, ref_logp_bglv=ref.logp_bglv)
    loss, m = grpo_loss(*args, clip_eps=0.2, beta=0.5, kl_estimator="exact", **dists)
    np.testing.assert_allclose(m["kl_exact"], want.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * want.mean(), rtol=1e-5)
    loss, m = grpo_loss(*args, clip_eps=0.2, beta=0.5, **dists)  # k3 stays the default
    np.testing.assert_allclose(loss, 0.5 * m["k3_beams"], rtol=1e-6)
    assert abs(float(m["k3_beams"]) - want.mean()) > 1e-3
    with pytest.raises(ValueError, match="needs logp_bglv"):
        grpo_loss(*args, clip_eps=0.2, beta=0.5, kl_estimator="exact")
    # The forward direction, KL(pi_ref || pi): its own brute-force sum, a different number.
    want_forward = _brute_force_kl(np.asarray(ref_logits, np.float64),
                                   np.asarray(logits, np.float64), np.asarray(codes))
    loss, m = grpo_loss(*args, clip_eps=0.2, beta=0.5, kl_estimator="exact",
                        kl_direction="forward", **dists)
    np.testing.assert_allclose(m["kl_exact_forward"], want_forward.mean(), rtol=1e-5)
    np.testing.assert_allclose(m["kl_exact"], want.mean(), rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * want_forward.mean(), rtol=1e-5)
    assert abs(want_forward.mean() - want.mean()) > 1e-3
    with pytest.raises(ValueError, match="kl_direction 'both' is not one of reverse, forward"):
        grpo_loss(*args, clip_eps=0.2, beta=0.5, kl_direction="both", **dists)


def _loss_grads(graphdef, params, model_state, loss_fn, batch):
    @jax.jit
    def grads(params):
        def loss(p):
            return loss_fn(nnx.merge(graphdef, p, model_state, copy=True), batch,
                           jax.random.key(0))[0]
        return jax.value_and_grad(loss)(params)

    return grads(params)


def test_the_nll_anchor_has_the_sft_gradient(catalog, requests):
    """pg_weight 0, beta 0, nll_weight 1 is the SFT loss on the same batch; nll_weight alpha
    adds alpha x the SFT gradient to the policy gradient; as separate terms, the first has the
    policy gradient alone and the second alpha x the SFT gradient."""
    graphdef, params, model_state = nnx.split(tiny("encoder_decoder", "item", dropout=0.0),
                                              nnx.Param, ...)
    codes_bgl = jnp.asarray(CODES[np.arange(B * G).reshape(B, G) * 3 % NUM_ITEMS])
    logp_bgl = jax.random.normal(jax.random.key(4), (B, G, L)) - 1.5
    batch = {"history": requests["history"], "history_mask": requests["history_mask"],
             "target": jnp.arange(B, dtype=jnp.int32) * 7 % NUM_ITEMS, "codes_bgl": codes_bgl,
             "ref_token_logprob_bgl": logp_bgl,
             "advantage_bgl": jax.random.normal(jax.random.key(5), (B, G, L)),
             "first_update": jnp.array(True)}
    sft_loss, sft_grads = _loss_grads(graphdef, params, model_state, make_sft_loss(), batch)
    anchor = policy_loss(catalog, clip_eps=0.2, beta=0.0, pg_weight=0.0, nll_weight=1.0)
    loss, grads = _loss_grads(graphdef, params, model_state, anchor, batch)
    np.testing.assert_allclose(loss, sft_loss, rtol=1e-6)
    assert max(np.abs(g).max() for g in jax.tree.leaves(sft_grads)) > 1e-3
    # float32 rounding of differently shaped matmuls (G + 1 candidates against 1): ~1e-7.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 grads, sft_grads)

    def rl_grads(nll_weight):
        loss_fn = policy_loss(catalog, clip_eps=0.2, beta=1e-2, nll_weight=nll_weight)
        return _loss_grads(graphdef, params, model_state, loss_fn, batch)[1]

    with_anchor, without = rl_grads(0.5), rl_grads(0.0)
    jax.tree.map(lambda a, b, s: np.testing.assert_allclose(a - b, 0.5 * s, rtol=1e-4,
                                                            atol=1e-6),
                 with_anchor, without, sft_grads)

    # separate_nll (rl.nll_learning_rate's two terms, one optimizer each): the RL terms alone,
    # scored without the target, and the anchor alone, the target scored in its own pass.
    rl_term, anchor_term = policy_loss(catalog, clip_eps=0.2, beta=1e-2, nll_weight=0.5,
                                       separate_nll=True)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 _loss_grads(graphdef, params, model_state, rl_term, batch)[1], without)
    anchor_loss, anchor_grads = _loss_grads(graphdef, params, model_state, anchor_term, batch)
    np.testing.assert_allclose(anchor_loss, 0.5 * sft_loss, rtol=1e-6)
    jax.tree.map(lambda a, s: np.testing.assert_allclose(a, 0.5 * s, rtol=1e-4, atol=1e-6),
                 anchor_grads, sft_grads)


def _setup(catalog, lr=1e-2):
    model = tiny("encoder_decoder", "item")
    optimizer = make_optimizer(lr, 0, 100, clip_norm=None)
    mesh = make_mesh()
    return model, optimizer, mesh


def test_an_update_raises_the_log_prob_of_positive_advantage_items(catalog, requests):
    model, optimizer, mesh = _setup(catalog, lr=1e-3)
    graphdef, state, _ = create_train_state(model, optimizer, jax.random.key(0), mesh)
    codes_bgl = jnp.asarray(CODES[np.arange(B * G).reshape(B, G) * 3 % NUM_ITEMS])
    score = jax.jit(lambda p: score_group(nnx.merge(graphdef, p, state.model_state), catalog,
                                          requests["history"], requests["history_mask"],
                                          codes_bgl).logprob_bg)
    before = np.asarray(score(state.params))
    adv_bg = jnp.tile(jnp.array([-0.5, 2.0, -0.5, -0.5, -0.5]), (B, 1))
    update = jax.jit(make_update(graphdef, policy_loss(catalog, clip_eps=0.2, beta=1e-3),
                                 optimizer))
    data = {"history": requests["history"], "history_mask": requests["history_mask"],
            "target": requests["target"], "codes_bgl": codes_bgl,
            "old_token_logprob_bgl": jnp.zeros((B, G, L)),
            "ref_token_logprob_bgl": jnp.zeros((B, G, L)), "advantage_bgl": adv_bg[:, :, None],
            "first_update": jnp.array(True)}
    state, metrics = update(state, data)
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_frac"] == 0.0
    change = np.asarray(score(state.params)) - before
    positive = np.asarray(adv_bg) > 0
    assert (change[positive] > 0).all(), change
    assert change[~positive].mean() < 0, change


def test_gram_is_the_inner_products_of_per_channel_gradients(catalog, requests):
    model, _, _ = _setup(catalog)
    graphdef, params, model_state = nnx.split(model, nnx.Param, ...)
    codes_bgl = jnp.asarray(CODES[np.arange(B * G).reshape(B, G) * 7 % NUM_ITEMS])
    rewards_bgk = jax.random.normal(jax.random.key(3), (B, G, 3))
    adv_bgk = channel_advantages(rewards_bgk)
    data = {"history": requests["history"], "history_mask": requests["history_mask"],
            "target": requests["target"], "codes_bgl": codes_bgl}

    @jax.jit
    def grad(adv_bg):
        def loss(p):
            m = nnx.merge(graphdef, p, model_state, copy=True)
            logp = score_group(m, catalog, data["history"], data["history_mask"],
                               codes_bgl).token_logprob_bgl
            return -(adv_bg[:, :, None] * jnp.exp(logp - jax.lax.stop_gradient(logp))).mean()
        return jax.grad(loss)(params)

    grads = [grad(adv_bgk[..., k]) for k in range(3)]
    subset = "^head/"
    for pattern in ("", subset):
        chosen = set(select_params(params, pattern))
        flat = [np.concatenate([np.ravel(x) for i, x in enumerate(jax.tree.leaves(g))
                                if i in chosen]) for g in grads]
        want = np.array([[fi @ fj for fj in flat] for fi in flat])
        gram = jax.jit(channel_gram, static_argnums=(0, 6))(
            graphdef, params, model_state, catalog, data, adv_bgk[:, :, None], pattern)
        np.testing.assert_allclose(gram, want, rtol=1e-4, atol=1e-9)
        assert np.linalg.eigvalsh(want).min() > -1e-6 * np.abs(want).max()
    paths = [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    assert 0 < len(select_params(params, subset)) < len(paths)
    assert all(paths[i].startswith("head/") for i in select_params(params, subset))
    with pytest.raises(ValueError, match="matches no parameter"):
        select_params(params, "^nothing")


def test_judged_mask_is_a_seeded_function_of_the_request():
    users, targets = jnp.arange(4000) % 97, jnp.arange(4000) // 97
    mask = judged_mask(jax.random.key(0), users, targets, 0.25)
    assert abs(float(mask.mean()) - 0.25) < 0.03
    np.testing.assert_array_equal(mask[::-1], judged_mask(jax.random.key(0), users[::-1],
                                                          targets[::-1], 0.25))
    assert judged_mask(jax.random.key(0), users, targets, 1.0).all()
    assert not judged_mask(jax.random.key(0), users, targets, 0.0).any()


def _value_score(tables, requests, items_bg, logprob_bg):
    del requests, logprob_bg
    return tables["value_n"][items_bg]


def _hit_and_value_popo():
    """"hit" and a per-item value channel (random values) under popo (per-channel gradients)."""
    value = RewardChannel("value", 0.0, 1.0, "business",
                          {"value_n": jax.random.uniform(jax.random.key(5), (NUM_ITEMS,))},
                          _value_score)
    channels = [REWARD_CHANNELS.get("hit")(None, {}), value]
    return channels, ESTIMATORS.build("popo", [ChannelSpec.of(c) for c in channels])


@pytest.fixture(scope="module")
def rl(catalog):
    """A popo RL step (per-channel gradients) over "hit" and a per-item value channel."""
    model, optimizer, mesh = _setup(catalog)
    value = RewardChannel("value", 0.0, 1.0, "business", {"value_n": jnp.zeros(NUM_ITEMS)},
                          _value_score)
    channels = [REWARD_CHANNELS.get("hit")(None, {}), value]
    estimator = ESTIMATORS.build("popo", [ChannelSpec.of(c) for c in channels])
    graphdef, state, sharding = create_train_state(
        model, optimizer, jax.random.key(0), mesh, extra=init_extra(estimator))
    settings = RLSettings(group_size=G, rollout="beam", temperature=1.0, updates_per_batch=1,
                          clip_eps=0.2, beta=1e-3, semantic_sample_ratio=1.0, judge_seed=0)
    step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                        estimator=estimator, settings=settings, mesh=mesh,
                        state_sharding=sharding)
    ref_params = jax.tree.map(jnp.copy, state.params)
    return step, state, ref_params, channels


def _with_values(channels, value_n):
    hit, value = channels
    return [hit, RewardChannel("value", 0.0, 1.0, "business", {"value_n": value_n},
                               value.score_fn)]


def test_rl_steps_move_the_policy_with_ratio_one_on_the_first_update(rl, catalog, requests):
    step, state, ref_params, channels = rl
    state = jax.tree.map(jnp.copy, state)  # the step donates its input
    before = jax.tree.map(np.asarray, state.params)
    channels = _with_values(channels, jax.random.uniform(jax.random.key(5), (NUM_ITEMS,)))
    state, m1 = step(state, ref_params, channels, catalog, requests)
    state, m2 = step(state, ref_params, channels, catalog, requests)
    for m in (m1, m2):
        assert m["ratio_mean"] == 1.0 and m["clip_frac"] == 0.0
        assert m["reward_fault"] == 0 and m["skipped"] == 0
        assert np.isfinite(m["loss"]) and m["entropy"] > 0
        assert m["judged_frac/hit"] == 1.0 and m["zero_std_frac/value"] == 0.0
    # The first batch is scored at the reference.
    assert m1["k3_beams"] < 1e-6 < m2["k3_beams"] and m1["kl_exact"] < 1e-6 < m2["kl_exact"]
    assert int(state.step) == 2 and int(state.nonfinite_steps) == 0
    weights = np.asarray(state.extra["estimator"]["weights_k"])
    assert not np.allclose(weights, 0.5) and np.isclose(weights.sum(), 1.0)
    np.testing.assert_allclose([m2["weights/hit"], m2["weights/value"]], weights)
    moved = jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(), state.params, before)
    assert max(jax.tree.leaves(moved)) > 0


def test_a_nan_business_reward_skips_the_update_and_is_counted(rl, catalog, requests):
    step, state, ref_params, channels = rl
    state = jax.tree.map(jnp.copy, state)
    before = jax.tree.map(np.asarray, (state.params, state.opt_state, state.extra))
    target = int(requests["target"][0])  # in request 0's group
    value_n = jnp.full(NUM_ITEMS, 0.5, jnp.float32).at[target].set(jnp.nan)
    state, metrics = step(state, ref_params, _with_values(channels, value_n), catalog, requests)
    assert metrics["reward_fault"] == 1 and metrics["skipped"] == 1
    assert int(metrics["nonfinite_steps"]) == int(state.nonfinite_steps) == 1
    assert int(state.step) == 1
    after = jax.tree.map(np.asarray, (state.params, state.opt_state, state.extra))
    jax.tree.map(np.testing.assert_array_equal, after, before)


def test_rl_step_on_eight_devices_matches_one_device():
    """data 4 x fsdp 2: the requests are split over all 8 devices, the MLP kernels and their Adam
    moments over fsdp; two updates on one rollout land where the 1-device step lands."""
    out = run_on_fake_devices(8, """
        import jax, jax.numpy as jnp, numpy as np
        from flax import nnx
        import sgrec_jax.registration
        from sgrec_jax.core.sharding import host_to_global, make_mesh
        from sgrec_jax.models.registry import build_model
        from sgrec_jax.rewards.channel import REWARD_CHANNELS, RewardChannel
        from sgrec_jax.rl.estimators import ESTIMATORS, ChannelSpec
        from sgrec_jax.rl.grpo import RLSettings, init_extra, make_rl_step
        from sgrec_jax.sid.catalog import build_catalog
        from sgrec_jax.train.train_state import create_train_state, make_optimizer
        from tests.fake_devices import assert_fsdp_sharded
        from tests.models.tiny import CODES, H, NUM_ITEMS, SIZES

        assert jax.device_count() == 8
        rng = np.random.default_rng(0)
        history = rng.integers(0, NUM_ITEMS, (8, H)).astype(np.int32)
        batch = {"history": history, "history_mask": history >= 0,
                 "target": np.arange(8, dtype=np.int32), "user": np.arange(8, dtype=np.int32)}
        catalog = jax.device_put(build_catalog(CODES, SIZES))
        value_n = jnp.asarray(rng.uniform(size=NUM_ITEMS), jnp.float32)
        channels = [REWARD_CHANNELS.get("hit")(None, {}),
                    RewardChannel("value", 0.0, 1.0, "business", value_n,
                                  lambda value_n, requests, items_bg, _: value_n[items_bg])]
        estimator = ESTIMATORS.build("popo", [ChannelSpec.of(c) for c in channels])
        optimizer = make_optimizer(1e-3, 0, 10)
        settings = RLSettings(group_size=4, rollout="sample", temperature=1.0,
                              updates_per_batch=2, clip_eps=0.2, beta=1e-3,
                              semantic_sample_ratio=1.0, judge_seed=0)
        runs = {}
        for name, mesh in [("one", make_mesh(1, 1)), ("eight", make_mesh(4, 2))]:
            # d_model x d_ff = 64 x 256 = MIN_FSDP_SIZE: the MLP kernels are split over fsdp.
            model = build_model("encoder_decoder", codes_nl=CODES, level_sizes=SIZES,
                                max_history=H, rngs=nnx.Rngs(0), num_layers=1, d_model=64,
                                num_heads=2, d_ff=256, dropout=0.0)
            ref = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
            graphdef, state, sharding = create_train_state(
                model, optimizer, jax.random.key(0), mesh, extra=init_extra(estimator))
            step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                                estimator=estimator, settings=settings, mesh=mesh,
                                state_sharding=sharding)
            requests = host_to_global(batch, mesh)
            state, metrics = step(state, jax.device_put(ref, sharding.params), channels, catalog,
                                  requests)
            if name == "eight":
                assert requests["history"].addressable_shards[0].data.shape == (1, H)
                # Parameters and both Adam moments: every large array is split in two.
                assert len(assert_fsdp_sharded(state, fsdp=2)) >= 6
                split = [x for x in jax.tree.leaves(state.params) if "fsdp" in x.sharding.spec]
                assert 0 < len(split) < len(jax.tree.leaves(state.params))  # small ones whole
            runs[name] = jax.device_get((state.params, metrics))
        p1, m1 = runs["one"]
        p8, m8 = runs["eight"]
        # Adam divides by sqrt(nu): elements with near-zero gradients amplify rounding; 5e-5 is
        # 2.5% of the 2e-3 that two updates move a parameter.
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5), p1, p8)
        for k in ("loss", "k3_beams", "kl_exact", "nll", "ratio_mean", "weights/hit"):
            np.testing.assert_allclose(m1[k], m8[k], rtol=1e-4, atol=1e-6)
        assert m8["k3_beams"] > 0  # the second update moved away from the reference
        print("ok", float(m8["grad_norm"]))
    """, timeout=400)
    assert out.startswith("ok")


def test_target_in_group_gives_every_hit_group_a_positive_and_raises_the_missed_target(
        catalog, requests):
    """Requests 0 and 1 get targets outside their beams: "hit" is constant on their groups, so
    without target_in_group they teach nothing; with it the target replaces their last beam,
    no group is constant, and one step raises log pi(target) of those requests more than the
    plain step does. target_in_rollout reports the rollout's own hit rate either way."""
    beams = constrained_beam_search_jit(tiny("encoder_decoder", "item"), catalog,
                                        requests["history"], requests["history_mask"],
                                        beam_size=G).items_bk
    outside = [next(i for i in range(NUM_ITEMS) if i not in set(np.asarray(beams[b])))
               for b in (0, 1)]
    target = requests["target"].at[:2].set(jnp.asarray(outside, jnp.int32))
    batch = {**requests, "target": target}
    channels = [REWARD_CHANNELS.get("hit")(None, {})]
    estimator = ESTIMATORS.build("single", [ChannelSpec.of(c) for c in channels])

    def target_logprob(graphdef, state):
        model = nnx.merge(graphdef, state.params, state.model_state)
        codes = model.item_codes(target)[:, None]
        return np.asarray(score_group(model, catalog, batch["history"], batch["history_mask"],
                                      codes, leave_out_b=target).logprob_bg[:, 0])

    rises, stats = {}, {}
    for inject in (False, True):
        model, optimizer, mesh = _setup(catalog, lr=1e-3)
        graphdef, state, sharding = create_train_state(
            model, optimizer, jax.random.key(0), mesh, extra=init_extra(estimator))
        ref_params = jax.tree.map(jnp.copy, state.params)
        settings = RLSettings(group_size=G, rollout="beam", temperature=1.0,
                              updates_per_batch=1, clip_eps=0.2, beta=0.0,
                              semantic_sample_ratio=1.0, judge_seed=0, target_in_group=inject)
        step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                            estimator=estimator, settings=settings, mesh=mesh,
                            state_sharding=sharding)
        before = target_logprob(graphdef, state)
        state, stats[inject] = step(state, ref_params, channels, catalog, batch)
        rises[inject] = target_logprob(graphdef, state) - before
    for inject in (False, True):
        assert stats[inject]["target_in_rollout"] == 0.5
    assert stats[False]["zero_std_frac/hit"] == 0.5 and stats[True]["zero_std_frac/hit"] == 0.0
    assert (rises[True][:2] > 0).all()
    assert (rises[True][:2] > rises[False][:2] + 1e-3).all()


def test_only_a_reader_of_the_log_probs_or_a_second_update_needs_a_pi_old_pass():
    settings = RLSettings(group_size=G, rollout="beam", temperature=1.0, updates_per_batch=1,
                          clip_eps=0.2, beta=1e-3, semantic_sample_ratio=1.0, judge_seed=0)
    hit, rank = (REWARD_CHANNELS.get(name)(None, {}) for name in ("hit", "rank"))
    assert not needs_old_pass(settings, [hit])
    assert needs_old_pass(settings, [hit, rank])  # rank orders the group by log pi_old
    assert needs_old_pass(dataclasses.replace(settings, updates_per_batch=2), [hit])
    assert needs_old_pass(dataclasses.replace(settings, candidate_weighting="policy"), [hit])


def test_the_policy_weighted_step_ascends_the_expected_advantage_over_the_group(catalog,
                                                                               requests):
    """With candidate_weighting "policy", SGD(1), no KL: one step moves the parameters by
    grad_theta mean_b sum_g w_g(theta) A_g / L, w = pi renormalised over the request's beams
    and A the estimator's advantages (autodiff of the objective written out here), and logs
    the effective group size."""
    channels = [REWARD_CHANNELS.get("hit")(None, {})]
    estimator = ESTIMATORS.build("single", [ChannelSpec.of(c) for c in channels])
    model, mesh, optimizer = tiny("encoder_decoder", "item"), make_mesh(), optax.sgd(1.0)
    graphdef, state, sharding = create_train_state(
        model, optimizer, jax.random.key(0), mesh, extra=init_extra(estimator))
    settings = RLSettings(group_size=G, rollout="beam", temperature=1.0, updates_per_batch=1,
                          clip_eps=0.2, beta=0.0, semantic_sample_ratio=1.0, judge_seed=0,
                          candidate_weighting="policy")
    step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                        estimator=estimator, settings=settings, mesh=mesh,
                        state_sharding=sharding)
    target = requests["target"]
    beams = constrained_beam_search_jit(model, catalog, requests["history"],
                                        requests["history_mask"], beam_size=G)
    hit_bg = (beams.items_bk == target[:, None]).astype(jnp.float32)
    advantage_bg = estimator(hit_bg[..., None], estimator.init_state())[0]
    assert np.abs(np.asarray(advantage_bg)).max() > 0

    def expected_advantage(params):
        policy = nnx.merge(graphdef, params, state.model_state)
        logprob_bg = score_group(policy, catalog, requests["history"], requests["history_mask"],
                                 beams.codes_bkl, leave_out_b=target).logprob_bg
        return (jax.nn.softmax(logprob_bg, axis=-1) * advantage_bg).sum(-1).mean()

    want = jax.tree.map(lambda g: np.asarray(g) / L, jax.grad(expected_advantage)(state.params))
    before = jax.tree.map(np.asarray, state.params)
    ref_params = jax.tree.map(jnp.copy, state.params)
    state, metrics = step(state, ref_params, channels, catalog, requests)
    moved = jax.tree.map(lambda a, b: np.asarray(a) - b, state.params, before)
    jax.tree.map(lambda got, w: np.testing.assert_allclose(got, w, rtol=2e-3, atol=1e-6),
                 moved, want)
    assert max(np.abs(leaf).max() for leaf in jax.tree.leaves(want)) > 1e-4
    assert 1.0 <= metrics["candidate_ess"] <= G and metrics["skipped"] == 0


def test_the_step_without_its_own_pi_old_pass_lands_where_the_step_with_it_lands(catalog,
                                                                               requests):
    """One update per batch and no channel reading log-probs: pi_old, the entropy and the
    rewards come from the update's own forward pass, with every new loss option on (NLL anchor,
    exact KL penalty, prefix-tree credit) and popo's per-channel gradients."""
    channels, estimator = _hit_and_value_popo()
    settings = RLSettings(group_size=G, rollout="beam", temperature=1.0, updates_per_batch=1,
                          clip_eps=0.2, beta=1e-2, semantic_sample_ratio=1.0, judge_seed=0,
                          nll_weight=0.3, kl_estimator="exact", level_credit="prefix_tree")
    assert not needs_old_pass(settings, channels)
    runs = {}
    for force in (False, True):
        model, optimizer, mesh = _setup(catalog)
        graphdef, state, sharding = create_train_state(
            model, optimizer, jax.random.key(0), mesh, extra=init_extra(estimator))
        ref_params = jax.tree.map(jnp.copy, state.params)
        step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                            estimator=estimator, settings=settings, mesh=mesh,
                            state_sharding=sharding, _force_old_pass=force)
        args = (ref_params, channels, catalog, requests)
        compiled = step.lower(state, *args).compile()
        metrics = []
        for _ in range(2):
            state, m = compiled(state, *args)
            metrics.append(m)
        runs[force] = (flops(compiled), jax.device_get((state.params, metrics)))
    (reused_flops, (params, metrics)), (forced_flops, (want_params, want_metrics)) = (
        runs[False], runs[True])
    assert reused_flops < forced_flops  # one forward pass of the group fewer
    for m, want in zip(metrics, want_metrics, strict=True):
        assert m.keys() == want.keys() and m["skipped"] == 0
        for key in want:
            np.testing.assert_allclose(m[key], want[key], rtol=1e-5, atol=1e-7, err_msg=key)
    assert metrics[0]["kl_exact"] < 1e-6 < metrics[1]["kl_exact"] and metrics[1]["nll"] > 0
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                 params, want_params)


def test_the_step_leaves_each_requests_own_transition_out_of_a_transition_memory(catalog,
                                                                                requests):
    """RL requests are training examples, so the memory counts each request's own last item ->
    target transition. The step (rollout, pi_old, pi_ref, the per-channel gradients and the
    update) must see the memory without it: a step on a table with those transitions lands
    where a step on the same table without them lands, though the entries change the scores."""
    last = np.asarray(requests["history"])[:, -1]
    target = np.asarray(requests["target"])
    own = np.stack([last, target], axis=1)
    assert len(set(last)) == B  # one own pair per source item
    # Every request's last item gets one other successor, so its own pair (count 1, k = 3)
    # displaces nothing: the table without it is the table with it, its entry left out.
    others = [[a, b] for a in range(NUM_ITEMS) for b in (a + 1, a + 7) if b < NUM_ITEMS]
    others = np.array([p for p in others if not any((p == own).all(1))])

    def memory_model(pairs):
        model = tiny("encoder_decoder", "item", transition_memory=3,
                     transition_memory_window=1, transition_memory_copy=True)
        model.transition_memory.load(
            TransitionCounts.from_pairs(pairs[:, 0], pairs[:, 1], NUM_ITEMS))
        return model

    channels, estimator = _hit_and_value_popo()
    settings = RLSettings(group_size=G, rollout="beam", temperature=1.0, updates_per_batch=1,
                          clip_eps=0.2, beta=1e-2, semantic_sample_ratio=1.0, judge_seed=0,
                          nll_weight=0.3, kl_estimator="exact")
    runs, plain_scores = {}, {}
    for name, pairs in (("with", np.concatenate([others, own])), ("without", others)):
        model = memory_model(pairs)
        plain_scores[name] = nnx.jit(score_group)(
            model, catalog, requests["history"], requests["history_mask"],
            jnp.asarray(CODES[np.arange(B * G).reshape(B, G) % NUM_ITEMS])).token_logprob_bgl
        optimizer = make_optimizer(1e-2, 0, 100, clip_norm=None)
        graphdef, state, sharding = create_train_state(
            model, optimizer, jax.random.key(0), make_mesh(), extra=init_extra(estimator))
        ref_params = jax.tree.map(jnp.copy, state.params)
        step = make_rl_step(graphdef=graphdef, optimizer=optimizer, channels=channels,
                            estimator=estimator, settings=settings, mesh=make_mesh(),
                            state_sharding=sharding, _force_old_pass=True)
        state, metrics = step(state, ref_params, channels, catalog, requests)
        runs[name] = jax.device_get((state.params, metrics))
    # Without leaving out, the requests' own entries change what the policy scores.
    assert np.abs(np.asarray(plain_scores["with"] - plain_scores["without"])).max() > 1e-4
    (params, metrics), (want_params, want_metrics) = runs["with"], runs["without"]
    assert metrics["skipped"] == 0 and metrics["zero_std_frac/value"] == 0
    for key in want_metrics:
        np.testing.assert_allclose(metrics[key], want_metrics[key], rtol=1e-5, atol=1e-6,
                                   err_msg=key)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 params, want_params)
