"""Training checkpoints: written atomically, found from the run's identity, refused on mismatch.

A run's identity is (task, attention, its resolved options, preset, seed): its checkpoints live in
<results-dir>/checkpoints/<identity>/ as last.pt (every --checkpoint-every steps and on a
signal) and best.pt (the best dev score so far). `--resume` continues from last.pt only if the
rest of the configuration is the same; settings that do not change the computation (where data
and results live, loader workers) may differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import attentions
from lra.atomic import atomic_write
from lra.config import RunConfig, flatten
from lra.errors import ConfigError

# Settings that may differ between a run and its resumption.
RUNTIME = {"data_dir", "results_dir", "data.num_workers"}


def identity(cfg: RunConfig) -> dict:
    return {
        "task": cfg.task,
        "attention": cfg.attention,
        "attention_options": attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options)),
        "preset": cfg.preset,
        "seed": cfg.seed,
    }


def run_key(cfg: RunConfig) -> str:
    digest = hashlib.sha256(json.dumps(identity(cfg), sort_keys=True).encode()).hexdigest()[:10]
    return f"{cfg.task}-{cfg.attention}-{cfg.preset}-s{cfg.seed}-{digest}"


def directory(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / "checkpoints" / run_key(cfg)


def differences(saved: dict, current: dict) -> list[str]:
    a, b = flatten(saved), flatten(current)
    keys = sorted((set(a) | set(b)) - RUNTIME)
    return [f"{k}: checkpoint {a.get(k)!r}, now {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def check_compatible(saved_config: dict, cfg: RunConfig, path: Path) -> None:
    diff = differences(saved_config, cfg.to_dict())
    if diff:
        raise ConfigError(
            f"refusing to resume from {path}: it was made with a different configuration:\n  "
            + "\n  ".join(diff)
            + "\nRun without --resume to start afresh, or resume with the original settings."
        )


def save(path: Path, state: dict) -> None:
    """Atomically (lra/atomic.py): a crash or SIGKILL mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)
