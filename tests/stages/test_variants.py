"""Recipe variants: parsing NAME:field=value;... and applying it to a locked config."""

import pytest
from ml_collections import ConfigDict

from sgrec_jax.stages.variants import apply_variant, parse_value, parse_variant, parse_variants


def config():
    config = ConfigDict({
        "seed": 0,
        "data": {"name": "", "max_history": 20},
        "sft": {"length_buckets": (), "learning_rate": 1e-3, "num_steps": 100},
        "model": {"options": {"item_id_embedding": False, "head_dim": 0}},
        "eval": {"level_scoring": "renormalized"},
    })
    config.lock()
    return config


@pytest.mark.parametrize("text, value", [
    ("(3,8)", (3, 8)), ("True", True), ("64", 64), ("1e-3", 1e-3), ("'text'", "text"),
    ("full_softmax", "full_softmax"), ("a b", "a b"), ("[3, 8]", [3, 8]),
])
def test_values_are_literals_else_raw_text(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_a_bare_name_has_no_overrides():
    variant = parse_variant("base")
    assert (variant.name, dict(variant.overrides)) == ("base", {})
    assert variant.describe() == "(config as given)"


def test_overrides_keep_their_order_and_text():
    variant = parse_variant("item_id:sft.length_buckets=(3,8); model.options.item_id_embedding"
                            "=True;")
    assert variant.name == "item_id"
    assert dict(variant.overrides) == {"sft.length_buckets": "(3,8)",
                                       "model.options.item_id_embedding": "True"}
    assert variant.describe() == "sft.length_buckets=(3,8); model.options.item_id_embedding=True"


@pytest.mark.parametrize("spec, message", [
    ("a/b", "the name must be letters, digits"),
    ("..", "the name must be letters, digits"),
    (":x=1", "the name must be letters, digits"),
    ("item_transition", "taken by a floor row"),
    ("x:sft.num_steps", r"'sft.num_steps' is not field=value"),
    ("x:=3", "is not field=value"),
    ("x:seed=1;seed=2", "field 'seed' is given twice"),
])
def test_malformed_specs_fail_naming_the_variant(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_variant(spec)


def test_variant_names_must_be_distinct_and_present():
    assert [v.name for v in parse_variants(["a", "b:seed=1"])] == ["a", "b"]
    with pytest.raises(ValueError, match="variant names repeat: a"):
        parse_variants(["a", "b", "a:seed=1"])
    with pytest.raises(ValueError, match="no variants"):
        parse_variants([])


def test_apply_sets_literals_raw_strings_and_nested_fields_on_a_copy():
    base = config()
    variant = parse_variant("v:sft.length_buckets=(3,8);model.options.item_id_embedding=True;"
                            "eval.level_scoring=full_softmax;sft.learning_rate=2;"
                            "model.options.head_dim=64")
    out, values = apply_variant(base, variant)
    assert out.sft.length_buckets == (3, 8)
    assert out.model.options.item_id_embedding is True and out.model.options.head_dim == 64
    assert out.eval.level_scoring == "full_softmax"
    assert out.sft.learning_rate == 2.0 and isinstance(out.sft.learning_rate, float)
    assert values == {"sft.length_buckets": (3, 8), "model.options.item_id_embedding": True,
                      "eval.level_scoring": "full_softmax", "sft.learning_rate": 2.0,
                      "model.options.head_dim": 64}
    # The given config is untouched, and the copy is as locked as it.
    assert base.sft.length_buckets == () and base.model.options.item_id_embedding is False
    assert out.is_locked
    with pytest.raises(AttributeError):
        out.sft.bogus = 1


def test_a_list_becomes_the_fields_tuple_and_a_string_field_keeps_the_raw_text():
    out, _ = apply_variant(config(), parse_variant("v:sft.length_buckets=[5];data.name=2014"))
    assert out.sft.length_buckets == (5,)
    assert out.data.name == "2014"


@pytest.mark.parametrize("override, message", [
    ("sft.lenght_buckets=(3,8)",
     r"variant 'bad', field 'sft.lenght_buckets': no such field; sft has learning_rate, "
     r"length_buckets, num_steps"),
    ("modle.options.head_dim=64", r"variant 'bad', field 'modle.options.head_dim': no section "
                                  r"'modle'"),
    ("seed.x=1", r"variant 'bad', field 'seed.x': 'seed' is not a section"),
    ("model.options=1", r"variant 'bad', field 'model.options': it is a section"),
])
def test_an_unknown_field_names_the_variant_and_the_field(override, message):
    with pytest.raises(ValueError, match=message):
        apply_variant(config(), parse_variant(f"bad:{override}"))


def test_a_dict_literal_replaces_a_section_whole():
    base = config()
    out, values = apply_variant(base, parse_variant("v:model.options={'d_model': 32}"))
    assert out.model.options.to_dict() == {"d_model": 32} == values["model.options"]
    assert "head_dim" in base.model.options  # the given config is untouched
    out, _ = apply_variant(base, parse_variant("v:model.options={}"))
    assert out.model.options.to_dict() == {} and out.is_locked


@pytest.mark.parametrize("override, message", [
    ("sft.num_steps=abc", r"'sft.num_steps': the field is int \(now 100\), got 'abc' \(str\)"),
    ("sft.num_steps=1.5", r"'sft.num_steps': the field is int \(now 100\), got 1.5 \(float\)"),
    ("sft.num_steps=True", r"'sft.num_steps': the field is int"),
    ("model.options.item_id_embedding=1",
     r"'model.options.item_id_embedding': the field is bool \(now False\), got 1 \(int\)"),
    ("sft.length_buckets=3", r"'sft.length_buckets': the field is tuple"),
    ("sft.learning_rate=fast", r"'sft.learning_rate': the field is float"),
])
def test_a_wrong_type_names_the_variant_and_the_field(override, message):
    with pytest.raises(ValueError, match=r"variant 'bad', field " + message):
        apply_variant(config(), parse_variant(f"bad:{override}"))
