"""Checking and converting values against type annotations.

One function (`coerce`) serves attention options, configuration overrides (`--set
train.lr=2e-4`) and task options, so a string from the command line and a value from Python
pass the same checks; one function (`make_options`) turns such values into an options
dataclass, for attentions and tasks alike.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any

from lra_base.errors import ConfigError, did_you_mean

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "{" + "|".join(str(a) for a in typing.get_args(tp)) + "}"
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp, where: str):
    """Return `value` as type `tp`, converting command-line strings; ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, tp, where)
    if origin is typing.Literal:
        return _coerce_literal(value, tp, where)
    if origin in (dict, list, tuple) or tp in (dict, list, tuple):
        return _coerce_container(value, tp, where)
    scalar = _SCALARS.get(tp)
    return scalar(value, where) if scalar else value


def _coerce_union(value, tp, where: str):
    """Optional[X] takes None (or "none"/"null" on the command line); otherwise the first member
    type that accepts the value."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        if len(args) < len(typing.get_args(tp)):
            return None
    errors = []
    for a in args:
        try:
            return coerce(value, a, where)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[-1] if errors else f"{where}: invalid value {value!r}")


def _coerce_literal(value, tp, where: str):
    choices = typing.get_args(tp)
    for c in choices:
        if value == c or (isinstance(value, str) and str(c) == value):
            return c
    raise ConfigError(f"{where} must be one of {list(choices)}, got {value!r}")


def _coerce_container(value, tp, where: str):
    """dict / list / tuple, given as JSON on the command line."""
    want = typing.get_origin(tp) or tp
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ConfigError(f"{where} must be JSON ({type_name(tp)}), got {value!r}") from None
    if want is tuple and isinstance(value, list):
        value = tuple(value)
    if not isinstance(value, want):
        raise ConfigError(f"{where} must be a {want.__name__}, got {value!r}")
    return value


def _coerce_bool(value, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ConfigError(f"{where} must be true or false, got {value!r}")


def _coerce_int(value, where: str) -> int:
    """Whole numbers also from "1_000", "1e3" or 2.0; never from a bool or 2.5."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            try:
                f = float(value)
            except ValueError:
                f = None
            if f is not None and f.is_integer():
                return int(f)
    raise ConfigError(f"{where} must be an integer, got {value!r}")


def _coerce_float(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    raise ConfigError(f"{where} must be a number, got {value!r}")


def _coerce_str(value, where: str) -> str:
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where} must be a string, got {value!r}")


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str}


def describe_fields(options_cls, overrides: dict | None = None) -> str:
    """'alpha: float = 3.0, eps: float = 1e-06' for help and error messages (`overrides` replace
    defaults, e.g. the values a preset pins)."""
    hints = typing.get_type_hints(options_cls)
    parts = []
    for f in dataclasses.fields(options_cls):
        default = (overrides or {}).get(f.name, _default_of(f))
        parts.append(f"{f.name}: {type_name(hints[f.name])} = {default!r}")
    return ", ".join(parts) or "(none)"


def make_options(options_cls, values: dict, owner: str, overrides: dict | None = None):
    """An instance of the options dataclass `options_cls` from user values.

    Unknown names fail listing the valid ones (with their types and defaults), each value is
    converted to its annotated type, and the dataclass's own range checks (`__post_init__`
    raising ValueError or TypeError) become a ConfigError naming `owner` ("attention 'pola'")."""
    valid = [f.name for f in dataclasses.fields(options_cls)]
    unknown = [k for k in values if k not in valid]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"{owner} has no option {k!r}{did_you_mean(k, valid)}. "
                          f"Valid options: {describe_fields(options_cls, overrides)}")
    hints = typing.get_type_hints(options_cls)
    converted = {k: coerce(v, hints[k], f"{owner} option {k!r}") for k, v in values.items()}
    try:
        return options_cls(**converted)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{owner}: {exc}") from None


def _default_of(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None
