"""The one probe of the machine and the code: what produced a run goes into every result record
(and every `python -m lra.attn_bench` table) as `env`, so figures from the same machine group."""

from __future__ import annotations

import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from lra_base.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@lru_cache(maxsize=None)
def git_sha() -> str:
    """The code revision: HEAD of the checkout this package runs from ('+dirty' if modified)."""
    if os.environ.get("LRA_GIT_SHA"):
        return os.environ["LRA_GIT_SHA"]
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return torch.device(name)


# What glibc's malloc reads from the environment at start-up. Set, they change how freed memory
# goes back to the kernel, and so a CPU's step time and what its resident set says (docs/pola-1d.md,
# "Measured effect of the choices"): records carry them all. Under those that keep freed memory in
# the process no CPU peak memory is told; a low MALLOC_MMAP_THRESHOLD_ alone returns blocks sooner,
# which the memory worker of lra/attn_bench.py sets on purpose.
MALLOC_SETTINGS = ("MALLOC_MMAP_MAX_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                   "MALLOC_ARENA_MAX", "GLIBC_TUNABLES")
KEEPING = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")


def malloc_settings(names: tuple[str, ...] = MALLOC_SETTINGS) -> dict[str, str]:
    return {name: os.environ[name] for name in names if name in os.environ}


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    return {
        "device": device.type,
        "device_name": device_name(device),
        "dtype": str(dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "git_sha": git_sha(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "malloc": malloc_settings() or None,
    }


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine shows in every time measured."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def memory_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None
