"""Typed config dataclasses from JSON values, with errors that name the key and the fix.

Parsing of JSON / CLI / UI values happens here, at the edge; everything inside the toolkit sees
validated, frozen dataclasses. Unknown keys and values of the wrong type are refused with a
message that names the key, what was found and what is accepted.
"""
from __future__ import annotations

import dataclasses
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message says which and what to use instead."""


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def as_json(obj) -> dict[str, Any]:
    """A config dataclass as JSON-ready values (tuples become lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(obj).items()}


def check_keys(data: dict, known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; known keys: {sorted(known)}")


def parse_dataclass(cls, data: dict[str, Any], where: str):
    """Build a frozen config dataclass from JSON values; lists become tuples, types are checked."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
    defaults = cls()
    check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
    kwargs = {name: _coerce(value, getattr(defaults, name), f"{where}.{name}")
              for name, value in data.items()}
    return cls(**kwargs)


def _fits(value: Any, default: Any) -> bool:
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Return value in the type of default, or raise a ConfigError naming the key."""
    if isinstance(default, tuple):
        if isinstance(value, (list, tuple)) and default and all(_fits(v, default[0]) for v in value):
            return tuple(type(default[0])(v) for v in value)
    elif default is None:
        return value  # an optional field; its dataclass checks the value
    elif _fits(value, default):
        return float(value) if isinstance(default, float) else value
    raise ConfigError(f"{where} = {value!r} has the wrong type; expected a value like {default!r}")
