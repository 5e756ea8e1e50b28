"""The name registry: registration, lookup, and the errors a bad config name gets."""

import pytest

from sgrec_jax.core.registry import Registry, UnknownNameError


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
    with pytest.raises(UnknownNameError, match="unknown model 'ndcg'; valid names: $"):
        models.get("ndcg")
    assert rewards.names() == ["hit", "ndcg"]
