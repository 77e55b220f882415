"""Training checkpoints and the random state they carry: written atomically, found from the
run's identity, refused on mismatch.

A run's checkpoints live in <results-dir>/checkpoints/<run key>/ (lra/core/identity.py) as
last.pt (every --checkpoint-every steps and on a signal) and best.pt (the best dev score so
far). `--resume` continues from last.pt only if the rest of the configuration is the same run;
settings that say where a run executes (data and results folders, loader workers, the device)
may differ. Everything random is saved with the model, so a resumed CPU run ends exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from lra.core.config import RunConfig
from lra.core.identity import config_dict, differences, run_key
from lra_base.atomic import atomic_write
from lra_base.errors import ConfigError


def directory(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / "checkpoints" / run_key(cfg)


def check_compatible(saved_config: dict, cfg: RunConfig, path: Path) -> None:
    diff = differences(saved_config, config_dict(cfg), ("checkpoint", "now"))
    if diff:
        raise ConfigError(
            f"refusing to resume from {path}: it was made with a different configuration:\n  "
            + "\n  ".join(diff)
            + "\nRun without --resume to start afresh, or resume with the original settings."
        )


def save(path: Path, state: dict) -> None:
    """Atomically (lra_base/atomic.py): a crash or SIGKILL mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
