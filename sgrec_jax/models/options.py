"""The options every SID generator variant takes, validated: `ModelOptions`.

Configs list the defaults from models/defaults.py (GENERATOR_OPTIONS, no JAX), the options
each variant is registered with; tests keep them equal to the fields' defaults here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from sgrec_jax.models.history import HISTORY_ENCODINGS
from sgrec_jax.models.layers import Precision
from sgrec_jax.models.transition_memory import COPY_GATES, MEMORY_PLACEMENTS


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
      transition_memory: k > 0 adds, as encoder tokens, the k items that most often followed each
        of the last `transition_memory_window` history items in training, with their counts
        (models/transition_memory.py; the SFT stage fills the table from the training data).
        0 = off.
      transition_memory_window: how many of the last history items the memory reads (>= 1).
      transition_memory_share: also give each memory token its source item's total successor
        count and the entry's share of it (models/transition_memory.py).
      transition_memory_copy: add a copy head (a pointer over the memory's items mixed into each
        level's distribution; models/transition_memory.CopyHead). Needs transition_memory > 0.
      transition_memory_copy_gate: what the copy head's gate reads (COPY_GATES): "state" the
        decoder state only; "context" also the pointer's context vector, the attention-weighted
        keys of the memory items it points at (See et al. 2017), which carry their counts.
      transition_memory_copy_prior: add a count prior to the copy head's scores, per source a
        learned a log(count) + b that starts as the counting floor's ranking of the memory's
        items (models/transition_memory.CopyHead). Needs transition_memory_copy.
      transition_memory_placement: where the memory tokens join (MEMORY_PLACEMENTS): "encoder",
        the encoder's input, beside the history tokens; "cross_attention", only the decoder's
        cross-attention keys and values, normalised and appended to the encoder output (the
        encoder runs over the history alone; the encoder-decoder only).
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
    transition_memory: int = 0
    transition_memory_window: int = 1
    transition_memory_share: bool = False
    transition_memory_copy: bool = False
    transition_memory_copy_gate: str = "state"
    transition_memory_copy_prior: bool = False
    transition_memory_placement: str = "encoder"
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
        if self.transition_memory < 0 or self.transition_memory_window < 1:
            raise ValueError(
                f"transition_memory must be >= 0 (0 = off) and transition_memory_window >= 1, "
                f"got {self.transition_memory} and {self.transition_memory_window}")
        for name in ("transition_memory_copy", "transition_memory_share"):
            if getattr(self, name) and not self.transition_memory:
                raise ValueError(f"{name} needs transition_memory > 0")
        if self.transition_memory_copy_prior and not self.transition_memory_copy:
            raise ValueError("transition_memory_copy_prior needs transition_memory_copy")
        if self.transition_memory_copy_gate not in COPY_GATES:
            raise ValueError(f"transition_memory_copy_gate must be one of {COPY_GATES}, got "
                             f"{self.transition_memory_copy_gate!r}")
        if self.transition_memory_placement not in MEMORY_PLACEMENTS:
            raise ValueError(f"transition_memory_placement must be one of {MEMORY_PLACEMENTS}, "
                             f"got {self.transition_memory_placement!r}")
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
