"""The SID generator registry, the options every generator takes, and `build_model`.

    model = build_model("encoder_decoder", codes_nl=codes, level_sizes=(256, 256, 256, 3),
                        max_history=20, rngs=nnx.Rngs(0), num_layers=4, d_model=128)

A config names the variant and passes its sizes as a mapping (`**cfg.model.options`;
`default_options()` gives the dict to start from). Unknown option names fail with the valid ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from sgrec_jax.core.registry import Registry
from sgrec_jax.models.history import HISTORY_ENCODINGS
from sgrec_jax.models.layers import Precision

if TYPE_CHECKING:
    from sgrec_jax.models.generator import SidGenerator

MODELS: Registry[type[SidGenerator]] = Registry("model")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Sizes and switches shared by every generator variant.

    Attributes:
      num_layers: blocks per stack (the encoder-decoder has this many in each of its two).
      d_model, num_heads, d_ff: width, attention heads, MLP width.
      head_dim: width of each attention head (T5's d_kv); 0 = d_model // num_heads, which then
        must divide evenly. TIGER's public recipes use 6 heads x 64 at d_model 128.
      dropout: rate on embeddings and on every residual branch when not deterministic.
      history_encoding: a name in HISTORY_ENCODINGS ("item": H tokens, "code": H * L tokens).
      item_id_embedding: add a learned per-item embedding to each history slot (off by default:
        it does not generalise to items rarely seen in histories, which is what SIDs are for).
      item_id_dropout: during training, the probability of dropping a history slot's whole
        item-id vector (with item_id_embedding): on Scientific the id embedding alone overfits
        (validation peaks early, test recall on targets that do not follow the last item falls).
      dtype: compute dtype (e.g. "bfloat16"); logits and softmaxes stay float32 regardless.
      param_dtype: dtype of the parameters.
    """

    num_layers: int = 4
    d_model: int = 128
    num_heads: int = 4
    head_dim: int = 0
    d_ff: int = 512
    dropout: float = 0.1
    history_encoding: str = "item"
    item_id_embedding: bool = False
    item_id_dropout: float = 0.0
    dtype: Any = "float32"
    param_dtype: Any = "float32"

    def __post_init__(self):
        for name in ("num_layers", "d_model", "num_heads", "d_ff"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.head_dim < 0:
            raise ValueError(f"head_dim must be >= 0 (0 = d_model // num_heads), got "
                             f"{self.head_dim}")
        if not self.head_dim and self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by num_heads={self.num_heads} "
                "(or set head_dim)"
            )
        for name in ("dropout", "item_id_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        HISTORY_ENCODINGS.get(self.history_encoding)
        for name in ("dtype", "param_dtype"):
            dtype = jnp.dtype(getattr(self, name))
            if not jnp.issubdtype(dtype, jnp.floating):
                raise ValueError(f"{name} must be a floating dtype, got {dtype}")
            object.__setattr__(self, name, dtype)

    @property
    def attention_head_dim(self) -> int:
        """The width of each attention head: head_dim, or d_model // num_heads when 0."""
        return self.head_dim or self.d_model // self.num_heads

    @property
    def precision(self) -> Precision:
        return Precision(self.dtype, self.param_dtype)


def default_options() -> dict[str, Any]:
    """Every generator option with its default."""
    return {f.name: f.default for f in dataclasses.fields(ModelOptions)}


def parse_options(options: dict[str, Any]) -> ModelOptions:
    """ModelOptions from a mapping; unknown names raise a ValueError listing the valid ones."""
    valid = sorted(f.name for f in dataclasses.fields(ModelOptions))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown model option(s) {', '.join(unknown)}; valid options: {', '.join(valid)}"
        )
    return ModelOptions(**options)


def build_model(
    name: str,
    *,
    codes_nl: np.ndarray,
    level_sizes: Sequence[int],
    max_history: int,
    rngs: nnx.Rngs,
    **sizes: Any,
) -> SidGenerator:
    """The generator variant `name` over the SID table codes_nl [N, L] (see ModelOptions)."""
    cls = MODELS.get(name)
    return cls(
        codes_nl=codes_nl,
        level_sizes=level_sizes,
        max_history=max_history,
        options=parse_options(sizes),
        rngs=rngs,
    )
