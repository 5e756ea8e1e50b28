"""SID generator models (Flax NNX): history in, the next item's semantic-ID codes out.

Importing the package registers every variant in MODELS; call `build_model`.
"""

from sgrec_jax.models.generator import DecoderOnly, EncoderDecoder, Memory, SidCodes, SidGenerator
from sgrec_jax.models.history import HISTORY_ENCODINGS
from sgrec_jax.models.layers import NEG_INF
from sgrec_jax.models.registry import MODELS, ModelOptions, build_model, default_options

__all__ = [
    "HISTORY_ENCODINGS",
    "MODELS",
    "NEG_INF",
    "DecoderOnly",
    "EncoderDecoder",
    "Memory",
    "ModelOptions",
    "SidCodes",
    "SidGenerator",
    "build_model",
    "default_options",
]
