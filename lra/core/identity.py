"""Run identity: what makes two runs the same.

One definition serves every command: a checkpoint is resumed only by the same run, a grid cell
is skipped when the same run already has an "ok" record, a bench cell is measured once per
machine, and the report keeps the latest record of each cell.

Two runs are the same when their configurations agree on everything but WHERE (the settings
that say where a run executes, not what it computes), with the attention options resolved
(defaults filled in, preset values applied) once, when the configuration is made. A record
written by an older version is read in this version's schema first: a setting it does not know
takes its default, a setting this version dropped is ignored.
"""

from __future__ import annotations

import hashlib
import json

from lra.core.config import RunConfig, flatten
from lra.core.names import resolved_options
from lra_base.errors import ConfigError

# Where a run executes, not what it computes: may differ between two runs that are the same.
WHERE = frozenset({"data_dir", "results_dir", "cache_dir", "device", "data.num_workers"})


def normalise(value):
    """JSON-normalised (tuples as lists, keys as strings): what a record read back holds."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def config_dict(cfg: RunConfig) -> dict:
    """The configuration as a record holds it: attention options resolved."""
    d = cfg.to_dict()
    d["attention_options"] = resolved_options(cfg.attention, cfg.attention_options)
    return normalise(d)


def comparable(config: dict) -> dict:
    """A configuration (a record's, a checkpoint's or config_dict's), flattened, in this version's
    schema, with its attention options resolved, minus WHERE."""
    upgraded = normalise(RunConfig.from_dict(config).to_dict())
    try:
        upgraded["attention_options"] = normalise(resolved_options(upgraded["attention"], upgraded["attention_options"]))
    except ConfigError:  # an attention (or option) this version does not have: compare as written
        pass
    return {k: v for k, v in flatten(upgraded).items() if k not in WHERE}


def differences(a: dict, b: dict, names: tuple[str, str] = ("first", "second")) -> list[str]:
    """'key: first 1, second 2' for every setting (outside WHERE) where two configs differ."""
    x, y = comparable(a), comparable(b)
    return [f"{k}: {names[0]} {x.get(k)!r}, {names[1]} {y.get(k)!r}" for k in sorted(set(x) | set(y))
            if x.get(k) != y.get(k)]


def same_run(a: dict, b: dict) -> bool:
    return comparable(a) == comparable(b)


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def run_key(cfg: RunConfig) -> str:
    """The name of a run's checkpoint folder: task, attention, preset and seed, and a digest of the
    resolved attention options (so a run with other options never finds this run's checkpoint).
    Other settings are checked against the checkpoint's own configuration when resuming."""
    opts = resolved_options(cfg.attention, cfg.attention_options)
    ident = {"task": cfg.task, "attention": cfg.attention, "attention_options": opts, "preset": cfg.preset,
             "seed": cfg.seed}
    return f"{cfg.task}-{cfg.attention}-{cfg.preset}-s{cfg.seed}-{_digest(ident)[:10]}"


def measurement_key(record: dict) -> str:
    """What makes two measurements (bench and scaling records) the same cell: the same run, the
    same kind of measurement, on the same machine (its device name, which includes the CPU
    thread count)."""
    ident = {"kind": record.get("kind"), "config": comparable(record.get("config") or {}),
             "device_name": (record.get("env") or {}).get("device_name")}
    return _digest(ident)[:16]
