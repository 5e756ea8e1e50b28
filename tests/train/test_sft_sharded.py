"""One SFT step of a SID generator on 8 CPU devices (data 4 x fsdp 2) matches the 1-device step.

Runs in a subprocess, since the fake device count must be set before JAX starts. Dropout is 0 and
the warmup is off, so the first step already moves every parameter and the two steps are the
same computation, laid out differently.
"""

from tests.fake_devices import run_on_fake_devices


def test_sft_step_on_eight_devices_matches_one_device():
    out = run_on_fake_devices(8, """
        import jax, numpy as np
        import optax
        from flax import nnx
        import sgrec_jax.registration
        from sgrec_jax.core.sharding import MIN_FSDP_SIZE, host_to_global, make_mesh
        from sgrec_jax.models.registry import build_model
        from sgrec_jax.stages.sft import sft_loss
        from sgrec_jax.train.train_state import create_train_state, make_optimizer, make_train_step
        from tests.fake_devices import assert_fsdp_sharded
        from tests.models.tiny import CODES, H, NUM_ITEMS, SIZES
        from tests.train.test_train_state import host

        assert jax.device_count() == 8

        def generator():
            # d_model x d_ff = 64 x 256 = MIN_FSDP_SIZE elements: the MLP kernels get split.
            return build_model(
                "encoder_decoder", codes_nl=CODES, level_sizes=SIZES, max_history=H,
                rngs=nnx.Rngs(0), num_layers=1, d_model=64, num_heads=2, d_ff=256, dropout=0.0,
            )

        rng = np.random.default_rng(0)
        history = rng.integers(0, NUM_ITEMS, (16, H)).astype(np.int32)
        history[::3, :2] = -1  # some padded slots
        batch = {"history": history, "history_mask": history >= 0,
                 "target": rng.integers(0, NUM_ITEMS, 16).astype(np.int32)}
        optimizer = make_optimizer(1e-3, warmup_steps=0, total_steps=10, weight_decay=0.01)

        runs = {}
        for name, mesh in [("one", make_mesh(1, 1)), ("eight", make_mesh(4, 2))]:
            graphdef, state, sharding = create_train_state(
                generator(), optimizer, jax.random.key(1), mesh
            )
            step = make_train_step(graphdef, sft_loss, optimizer, mesh, sharding)
            global_batch = host_to_global(batch, mesh)
            state, metrics = step(state, global_batch)
            kernel = state.params["encoder"][0]["mlp_in"]["kernel"][...]
            mu = optax.tree_utils.tree_get(state.opt_state, "mu")
            nu = optax.tree_utils.tree_get(state.opt_state, "nu")
            moments = [m["encoder"][0]["mlp_in"]["kernel"][...] for m in (mu, nu)]
            runs[name] = dict(loss=float(metrics["loss"]), params=host(state.params),
                              batch=global_batch["history"], arrays=[kernel, *moments],
                              state=state)

        eight = runs["eight"]
        assert eight["batch"].addressable_shards[0].data.shape == (2, H)  # 16 rows / 8 devices
        assert len(eight["batch"].sharding.device_set) == 8
        for array in eight["arrays"]:  # the kernel, Adam's mu and nu: each half on a device
            assert array.shape == (64, 256) and array.size >= MIN_FSDP_SIZE
            assert array.addressable_shards[0].data.shape == (64, 128), array.sharding
        assert all(len(a.sharding.device_set) == 1 for a in runs["one"]["arrays"])
        # Every large array of the state, parameters and Adam moments alike, is split in two.
        assert len(assert_fsdp_sharded(eight["state"], fsdp=2)) >= 6

        np.testing.assert_allclose(eight["loss"], runs["one"]["loss"], rtol=1e-5)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                     eight["params"], runs["one"]["params"])
        def mlp_in(params):
            return np.asarray(params["encoder"][0]["mlp_in"]["kernel"][...])

        initial = mlp_in(nnx.state(generator(), nnx.Param))
        assert not np.allclose(mlp_in(eight["params"]), initial)  # the step did update it
        print("loss", runs["one"]["loss"], eight["loss"])
    """)
    assert "loss" in out
