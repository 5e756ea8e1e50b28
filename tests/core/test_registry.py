"""The registry: registration, lookup, the options it owns, and the errors a bad config gets."""

import dataclasses

import pytest

from sgrec_jax.core.registry import Registry, UnknownNameError, UnknownOptionError, field_defaults


def make_registry() -> Registry:
    rewards = Registry("reward")

    @rewards.register("ndcg")
    def ndcg() -> str:
        return "ndcg"

    rewards.register("hit")(lambda: "hit")
    return rewards


def test_register_and_get():
    rewards = make_registry()
    assert rewards.get("ndcg")() == "ndcg"
    assert rewards.get("hit")() == "hit"
    assert rewards.names() == ["hit", "ndcg"]
    assert list(rewards) == ["hit", "ndcg"]
    assert "ndcg" in rewards and "recall" not in rewards


def test_register_returns_the_object_unchanged():
    rewards = Registry("reward")

    class Reward:
        pass

    assert rewards.register("cls")(Reward) is Reward


def test_duplicate_registration_is_an_error():
    rewards = make_registry()
    with pytest.raises(ValueError, match="reward 'ndcg' is already registered"):
        rewards.register("ndcg")(lambda: None)
    assert rewards.get("ndcg")() == "ndcg"  # the first registration stays


def test_unknown_name_lists_the_valid_names():
    rewards = make_registry()
    with pytest.raises(UnknownNameError) as error:
        rewards.get("recall")
    assert isinstance(error.value, KeyError)  # callers may catch it as a failed lookup
    assert str(error.value) == "unknown reward 'recall'; valid names: hit, ndcg"


def test_registries_are_independent():
    rewards, models = make_registry(), Registry("model")
    assert models.names() == []
    with pytest.raises(UnknownNameError, match=r"unknown model 'ndcg'; valid names:  \(nothing "
                       r"registered: import sgrec_jax.registration\)$"):
        models.get("ndcg")
    assert rewards.names() == ["hit", "ndcg"]


def estimators() -> Registry:
    """A registry whose entries take options: `entry(channels, options)`."""
    registry = Registry("advantage estimator")
    registry.register("popo", defaults={"eta": 0.1, "w_min": 0.05, "weights": None})(
        lambda channels, options: (channels, options))
    registry.register("single")(lambda channels, options: (channels, options))
    return registry


def test_options_are_the_registered_defaults_and_a_fresh_copy():
    registry = estimators()
    assert registry.options("popo") == {"eta": 0.1, "w_min": 0.05, "weights": None}
    assert registry.options("single") == {}  # registered without defaults
    registry.options("popo")["eta"] = 9.0
    assert registry.options("popo")["eta"] == 0.1


def test_defaults_are_copied_at_registration():
    registry, defaults = Registry("model"), {"sizes": [1, 2]}
    registry.register("mlp", defaults=defaults)(object)
    defaults["sizes"].append(3)
    assert registry.options("mlp") == {"sizes": [1, 2]}


def test_resolve_overrides_the_defaults():
    registry = estimators()
    assert registry.resolve("popo") == {"eta": 0.1, "w_min": 0.05, "weights": None}
    assert registry.resolve("popo", {"eta": 0.3, "weights": (1, 2)}) == {
        "eta": 0.3, "w_min": 0.05, "weights": (1, 2)}


def test_resolve_takes_a_config_dict():
    from ml_collections import ConfigDict

    resolved = estimators().resolve("popo", ConfigDict({"eta": 0.2, "weights": None}))
    assert resolved == {"eta": 0.2, "w_min": 0.05, "weights": None}


def test_build_calls_the_entry_with_its_resolved_options():
    registry = estimators()
    assert registry.build("popo", ["ecpm"], eta=0.2) == (
        ["ecpm"], {"eta": 0.2, "w_min": 0.05, "weights": None})
    assert registry.build("single", ["hit"]) == (["hit"], {})


def test_unknown_option_names_it_and_the_valid_ones():
    registry = estimators()
    with pytest.raises(UnknownOptionError) as error:
        registry.build("popo", ["ecpm"], etta=0.2, w_mn=0.1)
    assert isinstance(error.value, ValueError)
    assert str(error.value) == ("unknown option(s) etta, w_mn for advantage estimator 'popo'; "
                                "valid options: eta, w_min, weights")
    with pytest.raises(UnknownOptionError, match="for advantage estimator 'single'; valid "
                       "options: none$"):
        registry.resolve("single", {"eta": 0.1})


def test_options_of_an_unknown_name_list_the_valid_names():
    registry = estimators()
    for call in (registry.options, registry.resolve, registry.build):
        with pytest.raises(UnknownNameError, match="valid names: popo, single$"):
            call("popp")


def test_duplicate_registration_with_defaults_keeps_the_first():
    registry = estimators()
    with pytest.raises(ValueError, match="advantage estimator 'popo' is already registered"):
        registry.register("popo", defaults={"other": 1})(lambda channels, options: None)
    assert registry.options("popo") == {"eta": 0.1, "w_min": 0.05, "weights": None}


def test_field_defaults_of_an_options_dataclass():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Options:
        path: str
        normalize: bool = True
        fields: tuple = dataclasses.field(default_factory=lambda: ("title",))

    assert field_defaults(Options) == {"path": None, "normalize": True, "fields": ("title",)}
    assert list(field_defaults(Options)) == ["path", "normalize", "fields"]
