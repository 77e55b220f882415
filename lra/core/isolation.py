"""Process isolation: work that may crash, run out of memory or hang runs in a child process.

Grid cells, sweep jobs and every benchmark measurement run here, so an out-of-memory error, a
crash or a stuck CUDA context ends one child, never the command that started it. One module
says how a child is started (this checkout first on its path), how its output is streamed or
captured, when it is given up on, and what counts as running out of memory.
"""

from __future__ import annotations

import codecs
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

PACKAGE_ROOT = Path(__file__).resolve().parents[2]

# How an allocation failure reads, from torch's CUDA and CPU allocators and from the C library.
OOM_TEXTS = ("out of memory", "can't allocate memory", "cannot allocate memory", "not enough memory",
             "std::bad_alloc", "outofmemoryerror")


def child_env(extra: dict | None = None) -> dict:
    """The environment of a child: this checkout's packages first on the path, so the child runs
    the same code as its parent whatever is installed."""
    env = {**os.environ, **(extra or {})}
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + rest)
    return env


def python_command(*args: str) -> list[str]:
    """`python -m ...` with this interpreter."""
    return [sys.executable, *args]


def is_oom(exc: BaseException) -> bool:
    """Did this exception come from running out of (device or host) memory?"""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return isinstance(exc, RuntimeError) and any(t in text for t in OOM_TEXTS)


def killed_by_oom_killer(returncode: int | None) -> bool:
    """SIGKILL out of the blue: on Linux almost always the kernel's out-of-memory killer."""
    return returncode in (-9, 137)


def set_memory_limit(limit_mb: int | None) -> str | None:
    """Let this process's data segment (heap and private writable mappings) grow by at most
    `limit_mb` from now, so an oversized allocation fails with an error (recorded as "oom")
    instead of the kernel's OOM killer ending this process or a neighbour. Returns what was set."""
    if not limit_mb:
        return None
    try:
        text = Path("/proc/self/status").read_text()
        current = int(next(l for l in text.splitlines() if l.startswith("VmData:")).split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None
    limit = current + int(limit_mb) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return f"RLIMIT_DATA: {limit_mb} MiB above the {current // (1024 * 1024)} MiB in use before the model was built"


def stream(cmd: list[str], env: dict, started=None, out=None) -> tuple[int, list[str]]:
    """Run `cmd`, echoing its output as it comes (progress bars included) to `out` (default
    stdout); return the exit status and the last lines of its output. `started(proc)` is called
    with the child once it runs (a cluster job uses it to forward a pre-emption signal)."""
    out = out or sys.stdout
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    if started is not None:
        started(proc)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            text = decoder.decode(chunk)
            out.write(text)
            out.flush()
            tail = (tail + text)[-8000:]
    except KeyboardInterrupt:
        proc.wait()  # the child got the same Ctrl-C: let it write its checkpoint
        raise
    finally:
        proc.stdout.close()
    rc = proc.wait()
    lines = [l.strip() for l in tail.replace("\r", "\n").splitlines() if l.strip()]
    return rc, lines[-20:]


@dataclass
class Finished:
    """How a captured child ended."""

    returncode: int | None  # None: timed out (and killed)
    stdout: str
    stderr: str

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self, lines: int = 8) -> str:
        return "\n".join((self.stderr or self.stdout or "").strip().splitlines()[-lines:]) or "no output"


def run_captured(cmd: list[str], env: dict, timeout: float | None, cwd: str | None = None) -> Finished:
    """Run `cmd` to the end (or until `timeout` seconds), capturing its output."""
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")

        return Finished(None, text(exc.stdout), text(exc.stderr))
    return Finished(proc.returncode, proc.stdout, proc.stderr)
