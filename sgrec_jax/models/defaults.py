"""The options of every model with their defaults: the SID generators, SASRec and the counting
floors.

Plain data without JAX, so experiment configs can list them; sgrec_jax/registration.py
registers each model (or the stage that runs it) with its entry here. The classes document the
options: GENERATOR_OPTIONS are the fields of models.options.ModelOptions, SASREC_OPTIONS the
keyword arguments of models.sasrec.SASRec (tests keep each pair equal). Both take a compute
`dtype` ("bfloat16" on a GPU or TPU): parameters and optimizer state stay float32 (the
generator's `param_dtype` could change that; keep it float32 for training), and softmaxes,
logits and losses are float32 whatever the compute dtype.
"""

GENERATOR_OPTIONS = {
    "num_layers": 4,
    "d_model": 128,
    "num_heads": 4,
    "head_dim": 0,
    "d_ff": 512,
    "dropout": 0.1,
    "history_encoding": "item",
    "item_id_embedding": False,
    "item_id_dropout": 0.0,
    "transition_memory": 0,
    "transition_memory_window": 1,
    "transition_memory_share": False,
    "transition_memory_copy": False,
    "transition_memory_copy_gate": "state",
    "transition_memory_copy_prior": False,
    "transition_memory_placement": "encoder",
    "dtype": "float32",
    "param_dtype": "float32",
}

SASREC_OPTIONS = {
    "d_model": 64,
    "num_layers": 2,
    "num_heads": 2,
    "d_ff": 256,
    "dropout": 0.5,
    "attention_dropout": 0.5,
    "norm_first": False,
    "dtype": "float32",
}

# The counting floors (models/counting.py), by the name of the stage that runs each.
BASELINE_OPTIONS = {
    "popularity": {"exclude_history": False},
    # benchmarks.md's counting row: the last 3 history items weighted 1, 0.5, 0.25.
    "item_transition": {"window": 3, "weights": (1.0, 0.5, 0.25), "exclude_history": False},
}
