"""The attention registry: one decorator registers a token mixer with a typed options dataclass.

    @register("my-attention", complexity="O(N d^2)")
    class MyAttention(AttentionBase):
        '''One-line description. Then the equation, the paper, the options.'''

        @dataclass
        class Options:
            eps: float = 1e-6

        def core(self, q, k, v, mask): ...

    layer = build("my-attention", dim=64, heads=2, max_len=1024, eps=1e-5)

A class with an `Options` dataclass is constructed as `cls(dim=, heads=, max_len=, options=)`;
one without takes no options and is constructed as `cls(dim=, heads=, max_len=)`. Presets are
extra names for a class with some options fixed (`pola-a5` is `pola` with alpha=5); options given
to `build` still override them.

Options arrive from Python or, as strings, from the command line; both go through the same
type check against the dataclass annotations (lra_base.typed.coerce).
Unknown names and options raise a ConfigError (a ValueError) that lists the valid ones.

Third-party packages add attentions through the `lra.attentions` entry-point group: each entry
point names a module (or an object in it); loading it runs its `@register` decorators.
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable

from lra_base.errors import ConfigError, did_you_mean
from lra_base.typed import describe_fields, make_options

ENTRY_POINT_GROUP = "lra.attentions"

# The suite's headline method is the default attention of `run_lra.py`; until it is registered
# the default falls back along this list. Kept here so no code outside attentions/ names a method.
DEFAULT_PREFERENCE = ("pola-a3", "softmax")


@dataclass
class NoOptions:
    """Options of an attention that takes none."""


@dataclass(frozen=True)
class Entry:
    name: str
    cls: type
    options_cls: type | None
    fixed: dict = field(default_factory=dict)  # options a preset pins
    description: str = ""
    complexity: str = ""
    base: str | None = None  # the name a preset derives from

    @property
    def is_preset(self) -> bool:
        return self.base is not None


_REGISTRY: dict[str, Entry] = {}
_plugins_loaded = False


def register(
    name: str,
    *,
    description: str | None = None,
    complexity: str = "",
    presets: dict[str, dict] | None = None,
) -> Callable[[type], type]:
    """Class decorator: register `cls` under `name` (and each preset name with its options)."""

    def decorator(cls: type) -> type:
        options_cls = getattr(cls, "Options", None)
        if options_cls is not None and not dataclasses.is_dataclass(options_cls):
            raise TypeError(f"{cls.__name__}.Options must be a dataclass")
        desc = description or _first_line(cls.__doc__) or name
        entry = Entry(name, cls, options_cls, {}, desc, complexity)
        _add(entry)
        for preset, fixed in (presets or {}).items():
            resolve_options(entry, fixed)  # a preset with a bad option fails at import time
            pretty = ", ".join(f"{k}={v}" for k, v in fixed.items())
            _add(Entry(preset, cls, options_cls, dict(fixed), f"{desc} ({pretty})", complexity, name))
        return cls

    return decorator


def _add(entry: Entry) -> None:
    old = _REGISTRY.get(entry.name)
    if old is not None and (old.cls.__module__, old.cls.__qualname__) != (
        entry.cls.__module__,
        entry.cls.__qualname__,
    ):
        raise ValueError(
            f"attention name {entry.name!r} is already registered by "
            f"{old.cls.__module__}.{old.cls.__qualname__}"
        )
    _REGISTRY[entry.name] = entry


def unregister(name: str) -> None:
    """Remove a name (for tests and interactive experiments)."""
    _REGISTRY.pop(name, None)


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def load_plugins(force: bool = False) -> None:
    """Import every module advertised under the `lra.attentions` entry-point group."""
    global _plugins_loaded
    if _plugins_loaded and not force:
        return
    _plugins_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take the suite down with it
            warnings.warn(f"attention plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}")


def available() -> list[str]:
    """Sorted list of every registered name, presets included."""
    load_plugins()
    return sorted(_REGISTRY)


def get(name: str) -> Entry:
    load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown attention {name!r}{did_you_mean(name, _REGISTRY)}. "
            f"Valid attentions: {', '.join(sorted(_REGISTRY))}"
        ) from None


def default_name() -> str:
    """The attention `run_lra.py` uses when none is given."""
    for name in DEFAULT_PREFERENCE:
        if name in available():
            return name
    return available()[0]


# --- options -----------------------------------------------------------------------------------


def option_fields(name: str) -> list[dataclasses.Field]:
    entry = get(name)
    return list(dataclasses.fields(entry.options_cls)) if entry.options_cls else []


def describe_options(name: str) -> str:
    """'alpha: float = 3.0, dwc_kernel: int = 5, ...' for help and error messages."""
    entry = get(name)
    return describe_fields(entry.options_cls, entry.fixed) if entry.options_cls else "(none)"


def resolve(name: str, **options: Any):
    """The validated options object (defaults filled in, preset values applied) for `name`."""
    return resolve_options(get(name), options)


def resolve_options(entry: Entry, options: dict):
    merged = {**entry.fixed, **options}
    if entry.options_cls is None:
        if merged:
            raise ConfigError(f"attention {entry.name!r} takes no options; got {sorted(merged)}")
        return None
    return make_options(entry.options_cls, merged, f"attention {entry.name!r}", entry.fixed)


def options_dict(options) -> dict:
    """Plain dict of an options object, for result records."""
    return dataclasses.asdict(options) if options is not None else {}


def build(name: str, *, dim: int, heads: int, max_len: int, grid: tuple[int, int] | None = None, **options: Any):
    """Construct the token mixer `name` for model width `dim`, `heads` heads and length `max_len`.

    `grid` is the task's layout ((height, width) of an image whose pixels are the tokens, or None);
    it is handed to every class whose constructor takes a `grid` argument (AttentionBase does)."""
    entry = get(name)
    if heads < 1 or dim % heads:
        raise ConfigError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
    opts = resolve_options(entry, options)
    kwargs = {"dim": dim, "heads": heads, "max_len": max_len}
    if entry.options_cls is not None:
        kwargs["options"] = opts
    if "grid" in inspect.signature(entry.cls).parameters:
        kwargs["grid"] = grid
    return entry.cls(**kwargs)
