import jax
import numpy as np
import pytest
from flax import nnx

from sgrec_jax.core.registry import UnknownNameError
from sgrec_jax.models.options import ModelOptions
from sgrec_jax.models.registry import MODELS, build_model

SIZES = (6, 5, 7, 2)
CODES = np.array([[0, 0, 0, 0], [5, 4, 6, 1], [1, 2, 3, 0]], np.int32)


def abstract(name: str, codes=CODES, sizes=SIZES, max_history: int = 5, **options):
    """The model's structure and shapes, without computing any parameter."""
    return nnx.eval_shape(
        lambda: build_model(
            name, codes_nl=codes, level_sizes=sizes, max_history=max_history,
            rngs=nnx.Rngs(0), **options,
        )
    )


def num_params(model) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_both_variants_are_registered():
    assert MODELS.names() == ["decoder_only", "encoder_decoder"]


@pytest.mark.parametrize("name", MODELS.names())
def test_default_options_build_and_parameter_count_matches_the_architecture(name):
    options = MODELS.options(name)
    m = abstract(name, max_history=20, **options)
    d, ff, layers, vocab = options["d_model"], options["d_ff"], options["num_layers"], max(SIZES)
    block = d + 4 * d * d + d + 2 * d * ff  # norm, q / kv / out, norm, MLP (bias-free)
    cross = d + 4 * d * d
    shared = (sum(SIZES) + 1) * d + 20 * d + len(SIZES) * d + d + len(SIZES) * (d + 1) * vocab
    stacks = layers * block if name == "decoder_only" else layers * (2 * block + cross) + d
    assert num_params(m) == shared + stacks


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown option\(s\) d_hidden, layers for model "
                       r"'encoder_decoder'; valid options: d_ff, d_model, dropout, dtype, "
                       r".*num_layers, param_dtype"):
        abstract("encoder_decoder", layers=2, d_hidden=8)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match="valid names: decoder_only, encoder_decoder"):
        abstract("tiger")


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(d_model=30, num_heads=4), "divisible by num_heads"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
        (dict(num_layers=0), "num_layers must be >= 1"),
        (dict(dtype="int32"), "dtype must be a floating dtype"),
    ],
)
def test_bad_sizes_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        ModelOptions(**options)


def test_bad_history_encoding_is_rejected():
    with pytest.raises(UnknownNameError, match="history encoding 'items'"):
        ModelOptions(history_encoding="items")


def test_dtype_names_become_dtypes():
    assert ModelOptions(dtype="bfloat16").dtype == np.dtype("bfloat16")


@pytest.mark.parametrize(
    "codes, sizes, message",
    [
        (CODES, SIZES[:3], "codes have 4 levels but level_sizes has 3"),
        (CODES, (6, 5, 6, 2), "item 1 has code 6 at level 2, outside level_sizes"),
        (CODES - 1, SIZES, "must be >= 0; item 0 level 0 is -1"),
        (CODES[0], SIZES, r"non-empty \[N, L\] array"),
    ],
)
def test_bad_sid_tables_are_rejected(codes, sizes, message):
    with pytest.raises(ValueError, match=message):
        abstract("decoder_only", codes=codes, sizes=sizes)


def test_bad_max_history_is_rejected():
    with pytest.raises(ValueError, match="max_history must be >= 1"):
        abstract("decoder_only", max_history=0)
