"""The options of every quantizer with their defaults: the keyword arguments of its fit
function (sid/rq_kmeans.py, sid/rq_vae.py) other than levels, codebook_size and seed.

Plain data without JAX, so experiment configs can list them (config.sid.quantizer_options);
sgrec_jax/registration.py registers each fit function with its entry here (tests keep the two
equal).
"""

QUANTIZER_OPTIONS = {
    "rq_kmeans": {"iters": 50, "balanced": False, "init": "kmeans++"},
    "rq_vae": {
        "epochs": 200,
        "batch_size": 1024,
        "learning_rate": 1e-3,
        "latent_dim": 32,
        "hidden_dims": (512, 256, 128),
        "beta": 0.25,
        "kmeans_init": True,
        "kmeans_iters": 50,
        "reset_dead": True,
    },
}
