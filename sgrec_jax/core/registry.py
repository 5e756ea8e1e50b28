"""One string-keyed registry mechanism for the whole codebase, owning each entry's options.

Datasets, embedding sources, quantizers, models, reward channels, advantage estimators and
pipeline stages are all looked up by name from the config, so an ablation is a config change.
An entry is registered with the default values of the options it takes; the registry checks a
config's options against them (in `resolve`, the one place an unknown option is caught) and
hands the entry the defaults updated by the config's values:

    ESTIMATORS = Registry("advantage estimator")
    ESTIMATORS.register("popo", defaults={"eta": 0.1, "w_min": 0.05})(Popo)

    ESTIMATORS.options("popo")                    # {"eta": 0.1, "w_min": 0.05}
    ESTIMATORS.build("popo", channels, eta=0.2)   # Popo(channels, {"eta": 0.2, "w_min": 0.05})

Unknown names and unknown options fail early with the list of valid ones. Every registration
lives in sgrec_jax/registration.py; the default values live in modules without JAX (e.g.
rl/defaults.py), so experiment configs can list every option without importing the models.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A config named something that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0])


class UnknownOptionError(ValueError):
    """A config gave an entry an option it does not take."""


class Registry(Generic[T]):
    """A named collection of implementations of one concept, with each one's default options."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._defaults: dict[str, dict[str, Any]] = {}

    def register(
        self, name: str, *, defaults: Mapping[str, Any] | None = None
    ) -> Callable[[T], T]:
        """Decorator that registers `obj` under `name` with its options' `defaults` (none when
        omitted). Names are unique per registry."""

        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            self._defaults[name] = copy.deepcopy(dict(defaults or {}))
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            hint = "" if self._entries else " (nothing registered: import sgrec_jax.registration)"
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; valid names: {', '.join(sorted(self._entries))}"
                f"{hint}"
            ) from None

    def options(self, name: str) -> dict[str, Any]:
        """The options of `name` with their defaults (a fresh copy)."""
        self.get(name)
        return copy.deepcopy(self._defaults[name])

    def resolve(self, name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults of `name` updated by `overrides` (a mapping or a ConfigDict).

        Raises UnknownNameError for an unknown name and UnknownOptionError, naming the unknown
        options and the valid ones, for an option `name` does not take.
        """
        options = self.options(name)
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(options))
        if unknown:
            raise UnknownOptionError(
                f"unknown option(s) {', '.join(unknown)} for {self.kind} {name!r}; "
                f"valid options: {', '.join(sorted(options)) or 'none'}"
            )
        return {**options, **overrides}

    def build(self, name: str, /, *args: Any, **overrides: Any) -> Any:
        """`entry(*args, options)`: the entry `name` called with its resolved options last."""
        options = self.resolve(name, overrides)
        return self.get(name)(*args, options)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def field_defaults(options_class: type) -> dict[str, Any]:
    """The fields of an options dataclass with their defaults (None for a required field), in
    field order: the `defaults` of an entry whose options are a dataclass."""
    out: dict[str, Any] = {}
    for field in dataclasses.fields(options_class):
        if field.default is not dataclasses.MISSING:
            out[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            out[field.name] = field.default_factory()
        else:
            out[field.name] = None
    return out
