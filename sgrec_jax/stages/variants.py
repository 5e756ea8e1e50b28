"""Recipe variants: a name and config overrides, parsed from one command-line string.

    NAME                                  the config as given
    NAME:field=value;field=value          the config with these fields changed

field is a dotted path into the config (`sft.length_buckets`, `model.options.head_dim`); value
is a Python literal (`(3,8)`, `True`, `64`, `1e-3`, `'text'`), read with ast.literal_eval, or
else the raw text (`full_softmax`); a string field always takes the raw text unless it is a
quoted literal, so `data.name=2014` stays a string. A value may not contain ";". Names are
letters, digits, "_" and "-" (each names a directory) and may not be a row the floors take.

A section takes only a dict literal, which replaces it whole: switching a registry name also
switches its options, e.g. `sid.embeddings.source=collaborative;sid.embeddings.options={}` (the
new source's defaults; the text source's options would be unknown to it).
Overrides are checked against the config before anything runs: an unknown field, a section
given anything but a dict, or a value of another type than the field's (ints are accepted for
floats, lists for tuples) raises ValueError naming the variant and the field.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ml_collections import ConfigDict

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
RESERVED_NAMES = ("item_transition", "popularity")  # The floors' rows in the table.


@dataclasses.dataclass(frozen=True)
class Variant:
    """One row of a recipe ablation.

    Attributes:
      name: the row name and the directory the variant runs in.
      overrides: dotted field -> its value's text, in the order given.
    """

    name: str
    overrides: Mapping[str, Any]

    def describe(self) -> str:
        """`field=value; ...`, or "(config as given)"."""
        return "; ".join(f"{k}={v}" for k, v in self.overrides.items()) or "(config as given)"


def parse_value(text: str) -> Any:
    """A Python literal, or the raw text when `text` is not one."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_variant(spec: str) -> Variant:
    """`NAME` or `NAME:field=value;...` (module docstring) -> Variant; ValueError when malformed."""
    name, _, body = spec.partition(":")
    name = name.strip()
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"variant {spec!r}: the name must be letters, digits, '_' and '-' "
                         "(it names a directory), starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise ValueError(f"variant {name!r}: the name is taken by a floor row "
                         f"({', '.join(RESERVED_NAMES)})")
    overrides: dict[str, Any] = {}
    for item in (piece.strip() for piece in body.split(";")):
        if not item:
            continue
        field, equals, value = item.partition("=")
        field = field.strip()
        if not equals or not field:
            raise ValueError(f"variant {name!r}: {item!r} is not field=value")
        if field in overrides:
            raise ValueError(f"variant {name!r}: field {field!r} is given twice")
        overrides[field] = value.strip()
    return Variant(name, overrides)


def parse_variants(specs: Iterable[str]) -> list[Variant]:
    """Every spec parsed; at least one, names distinct."""
    variants = [parse_variant(spec) for spec in specs]
    if not variants:
        raise ValueError("no variants: pass --variant=NAME[:field=value;...] at least once")
    names = [v.name for v in variants]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"variant names repeat: {', '.join(repeated)}")
    return variants


def _coerce(current: Any, value: Any, raw: str) -> Any:
    """value as the type of the field's current value; TypeError when it is another type."""
    if isinstance(current, str):
        return value if isinstance(value, str) else raw
    if current is None:
        return value
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        value = type(current)(value) if ok else value
    else:
        ok = isinstance(value, type(current))
    if not ok:
        raise TypeError(f"the field is {type(current).__name__} "
                        f"(now {current!r}), got {value!r} ({type(value).__name__})")
    return value


def _set(config: ConfigDict, field: str, raw: str) -> Any:
    """Sets config's dotted `field` from its text; returns the value set."""
    *path, leaf = field.split(".")
    section = config
    for depth, part in enumerate(path):
        if not isinstance(section, ConfigDict) or part not in section:
            raise KeyError(f"no section {'.'.join(path[:depth + 1])!r}")
        section = section[part]
    if not isinstance(section, ConfigDict):
        raise KeyError(f"{'.'.join(path)!r} is not a section")
    if leaf not in section:
        raise KeyError(f"no such field; {'.'.join(path) or 'the config'} has "
                       f"{', '.join(sorted(section.keys()))}")
    current = section[leaf]
    value = parse_value(raw)
    if isinstance(current, ConfigDict):
        if not isinstance(value, dict):
            raise KeyError(f"it is a section; override its fields ({field}.NAME=...) or replace "
                           "it whole with a dict literal")
        with section.unlocked():
            section[leaf] = ConfigDict(value)
        return value
    value = _coerce(current, value, raw)
    setattr(section, leaf, value)
    return section[leaf]


def apply_variant(config: ConfigDict, variant: Variant) -> tuple[ConfigDict, dict[str, Any]]:
    """A copy of config with the variant's overrides, and {field: value set}.

    ValueError naming the variant and the field for an unknown field or a wrong type.
    """
    out = config.copy_and_resolve_references()
    values = {}
    for field, raw in variant.overrides.items():
        try:
            values[field] = _set(out, field, raw)
        except (KeyError, TypeError, AttributeError) as e:
            reason = e.args[0] if e.args else str(e)
            raise ValueError(f"variant {variant.name!r}, field {field!r}: {reason}") from None
    return out, values


def variant_configs(
    config: ConfigDict, variants: Sequence[Variant]
) -> dict[str, tuple[ConfigDict, dict[str, Any]]]:
    """{name: apply_variant(config, variant)} for every variant, checked before any runs."""
    return {v.name: apply_variant(config, v) for v in variants}
