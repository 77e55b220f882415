"""Training checkpoints and the random state they carry: written atomically, found from the
run's identity, refused on mismatch, never silently overwritten.

A run's checkpoints live in <results-dir>/checkpoints/<run key>/ (lra/core/identity.py) as
last.pt (every --checkpoint-every steps and on a signal; removed when the run finishes),
final.pt (the state at the last step, so a finished run can be extended) and best.pt (the best
dev score so far). `--resume` continues from last.pt (or extends a finished run from final.pt)
only if the rest of the configuration is the same run; settings that say where a run executes
(data, results and cache folders, loader workers, the device) may differ, and `--steps` may
grow (docs/reliability.md: what the schedule then does). Without --resume an unfinished last.pt
is refused, naming its step and both ways on. Everything random is saved with the model, so a
resumed CPU run ends exactly as an uninterrupted one would.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from lra.core.config import RunConfig
from lra.core.identity import config_dict, differences, run_key
from lra_base.atomic import atomic_write
from lra_base.errors import ConfigError, StorageError

LAST, FINAL, BEST = "last.pt", "final.pt", "best.pt"


def directory(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / "checkpoints" / run_key(cfg)


def check_compatible(saved_config: dict, cfg: RunConfig, path: Path, ignore: tuple = ()) -> None:
    diff = [d for d in differences(saved_config, config_dict(cfg), ("checkpoint", "now"))
            if d.split(":")[0] not in ignore]
    if diff:
        raise ConfigError(
            f"refusing to resume from {path}: it was made with a different configuration:\n  "
            + "\n  ".join(diff)
            + "\nResume with the original settings, or start afresh without --resume and with --restart "
            "(which deletes this checkpoint)."
        )


def resumable(cfg: RunConfig, resume: bool, restart: bool) -> dict | None:
    """The checkpoint this run continues from (with its file as `_path` and, when --steps changed,
    the `_extension`), or None to start at step 0. Without --resume an unfinished checkpoint is
    refused, never overwritten; --restart deletes it first. `cfg.train.warmup` takes the
    checkpoint's when the run is extended (its warm-up already ran)."""
    last, final = directory(cfg) / LAST, directory(cfg) / FINAL
    if resume and restart:
        raise ConfigError("--resume continues a run and --restart starts it again from step 0: pass one of them")
    if restart:
        last.unlink(missing_ok=True)
        return None
    if not resume:
        if last.exists():
            step, steps = progress_of(last)
            raise ConfigError(f"{last} holds this run unfinished, at step {step} of {steps}: continue it with the "
                              "same command and --resume, or start again from step 0 with --restart (deletes it)")
        return None
    source = last if last.exists() else final if final.exists() else None
    if source is None:
        return None
    saved = load(source)
    saved["_path"], saved["_extension"] = source, extension(saved, cfg, source)
    check_compatible(saved["config"], cfg, source, ignore=("train.steps",))
    return saved


def extension(saved: dict, cfg: RunConfig, source: Path) -> dict | None:
    """What changes when --steps differs from the checkpoint's: None when it does not."""
    old, step = saved["config"]["train"], saved["state"]["step"]
    if cfg.train.steps == old["steps"]:
        if source.name == FINAL:
            raise ConfigError(f"this run finished at step {step} ({source}): nothing to resume. Extend it with "
                              f"--resume --steps N (N > {step}), or run it again without --resume")
        return None
    if cfg.train.steps <= step:
        raise ConfigError(f"{source} is at step {step}: --steps {cfg.train.steps} ends before it; pass --steps N "
                          f"(N > {step}) to extend the run")
    cfg.train.warmup = old["warmup"]  # the warm-up ran (or is running) as the checkpoint had it
    return {"at_step": step, "from_steps": old["steps"], "to_steps": cfg.train.steps, "from_run": saved["run_id"]}


def progress_of(path: Path) -> tuple:
    saved = load(path)
    return saved["state"]["step"], saved["config"]["train"]["steps"]


def save(path: Path, state: dict) -> None:
    """Atomically (lra_base/atomic.py): a crash or SIGKILL mid-write leaves the previous checkpoint intact."""
    atomic_write(path, lambda f: torch.save(state, f))


def load(path: Path) -> dict:
    """A checkpoint of this suite, or a StorageError naming the file and the fix (a file cut short
    by a full disk or a failed copy, or not a checkpoint at all)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many kinds for a damaged file; all mean the same here
        reason = (str(exc).strip().splitlines() or [""])[0][:100]
        raise StorageError(f"cannot read the checkpoint {path} ({type(exc).__name__}: {reason}): the file is "
                           f"damaged; delete it (rm {path}) and run again, which starts from step 0") from None
    # last.pt holds the whole training state, best.pt the best-dev model only; both say their config
    if not isinstance(saved, dict) or "config" not in saved or not {"state", "model"} & saved.keys():
        raise StorageError(f"{path} is not a training checkpoint of this suite; delete it (rm {path}) and run again")
    return saved


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
