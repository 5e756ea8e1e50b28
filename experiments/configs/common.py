"""Defaults shared by every experiment config; each config file overrides what it needs.

Every field can be overridden on the command line, e.g. `--config.sid.levels=4`. Configs are
locked, so a typo in a field name fails before any work with the list of valid fields.
"""

import os

from ml_collections import ConfigDict

from sgrec_jax.embeddings import default_options
from sgrec_jax.sid.quantizers import default_options as quantizer_options


def data_root() -> str:
    """Where public datasets live: $SGREC_DATA_DIR, else ./data (see README, "Data")."""
    return os.environ.get("SGREC_DATA_DIR", "data")


def base_config() -> ConfigDict:
    config = ConfigDict()
    config.seed = 0
    # Pipeline stages, in order (registered in sgrec_jax/train/stages.py).
    config.stages = ("sids",)

    config.data = ConfigDict()
    config.data.format = "synthetic"  # A DATASET_FORMATS name: p5, letter, synthetic.
    config.data.dir = ""
    config.data.name = ""  # Defaults to the folder name.
    config.data.bid_seed = 0  # Seeds the simulated bids (and the synthetic world).
    config.data.min_seq_len = 3
    config.data.max_history = 20  # TIGER's cap.
    config.data.options = ConfigDict()  # Format-specific, e.g. the synthetic world's knobs.

    config.sid = ConfigDict()
    config.sid.source = "quantizer"  # "quantizer" or "index" (a precomputed LETTER index).
    config.sid.index_path = ""
    config.sid.codebook_size = 256
    config.sid.levels = 3
    config.sid.quantizer = "rq_kmeans"  # A QUANTIZERS name: rq_kmeans, rq_vae.
    config.sid.quantizer_options = ConfigDict(quantizer_options("rq_kmeans"))
    config.sid.embeddings = ConfigDict()
    config.sid.embeddings.source = "text"  # An EMBEDDING_SOURCES name.
    config.sid.embeddings.dim = 64
    config.sid.embeddings.options = ConfigDict(default_options("text"))
    return config


def set_quantizer(config: ConfigDict, name: str) -> None:
    """Selects a quantizer and exposes all its options (with defaults) for overriding."""
    config.sid.quantizer = name
    config.sid.quantizer_options = ConfigDict(quantizer_options(name))
