"""Names on the command line: lists of tasks, attentions and seeds, and what an attention name
computes.

Every command takes several attentions (or tasks) the same way: repeated, comma-separated, or
`all`. `all` expands to every registered task, and to every registered attention with aliases
dropped: names that build the same class with the same resolved options (a base name whose
defaults equal one of its presets) run once, under the preset's name.
"""

from __future__ import annotations

import json

import attentions
import tasks
from lra_base.errors import ConfigError


def split_names(values) -> list[str]:
    """['a,b', 'c'] or 'a,b' or 'a b' -> ['a', 'b', 'c'] (order kept, repeats dropped)."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or []:
        for name in str(v).replace(",", " ").split():
            if name not in out:
                out.append(name)
    return out


def resolved_options(name: str, options: dict | None = None) -> dict:
    """The full options an attention runs with (defaults filled in, preset values applied), as a
    plain dict: what records store and what run identity compares."""
    return attentions.options_dict(attentions.resolve(name, **(options or {})))


def attention_key(name: str, options: dict | None = None) -> tuple[str, str]:
    """What a name computes: its class and resolved options (equal keys = the same computation)."""
    entry = attentions.get(name)
    opts = resolved_options(name, options)
    return f"{entry.cls.__module__}.{entry.cls.__qualname__}", json.dumps(opts, sort_keys=True, default=str)


def canonical_names() -> dict[str, str]:
    """Every registered name -> the name it runs under in `all`: among names with the same
    class and resolved options, a preset name (it says its options) before the base name."""
    groups: dict[tuple, list[str]] = {}
    for name in attentions.available():
        groups.setdefault(attention_key(name), []).append(name)
    out = {}
    for names in groups.values():
        best = sorted(names, key=lambda n: (not attentions.get(n).is_preset, n))[0]
        out.update({n: best for n in names})
    return out


def expand_tasks(spec) -> list[str]:
    names = split_names(spec)
    if not names:
        raise ConfigError(f"no task given; valid tasks: {', '.join(tasks.available())} (or all)")
    out: list[str] = []
    for name in names:
        for n in tasks.available() if name == "all" else [name]:
            tasks.get(n)  # unknown names fail here, listing the valid ones
            if n not in out:
                out.append(n)
    return out


def expand_attentions(spec) -> list[str]:
    names = split_names(spec)
    if not names:
        raise ConfigError(f"no attention given; valid attentions: {', '.join(attentions.available())} (or all)")
    out: list[str] = []
    for name in names:
        if name == "all":
            chosen = sorted(set(canonical_names().values()))
        else:
            attentions.get(name)
            chosen = [name]
        out += [n for n in chosen if n not in out]
    return out


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' or '3' -> a list of seeds."""
    seeds: list[int] = []
    try:
        for part in split_names(text):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds takes a list like 0,1,2 or a range like 0-4, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds needs seeds >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))
