"""Process isolation: work that may crash, run out of memory or hang runs in a child process.

Grid cells, sweep jobs and every benchmark measurement run here, so an out-of-memory error, a
crash or a stuck CUDA context ends one child, never the command that started it. One module
says how a child is started (this checkout first on its path), how its output is streamed or
captured, when it is given up on, and what counts as running out of memory; and how several
children share one machine (`run_pool`: at most K at once, signals forwarded, output prefixed).
"""

from __future__ import annotations

import codecs
import ctypes
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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


def die_with_parent() -> None:
    """Called first thing in a child that runs in a session of its own (out of its parent's process
    group): on Linux, the kernel kills it when its parent dies, so a killed campaign or benchmark
    leaves no measuring process holding the GPU. Elsewhere, nothing."""
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL) != 0:  # PR_SET_PDEATHSIG
            return
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call: nothing will kill us
        os._exit(1)


# --- children that run side by side ----------------------------------------------------------------

_OUT_LOCK = threading.Lock()  # one writer at a time: lines of children running side by side never mix


class Running:
    """A child started now, whose output a reader thread passes on as it comes: raw (progress bars
    intact), or with `prefix` as whole lines each starting with it, so the output of children
    running side by side stays readable. `echo=False` keeps only the tail (for error messages).
    `session=True` starts the child in a session of its own: `signal` then reaches its whole
    process tree (a benchmark's measuring grandchildren), and a terminal's Ctrl-C reaches only the
    parent, which decides what to forward."""

    def __init__(self, cmd: list[str], env: dict, *, out=None, prefix: str | None = None, echo: bool = True,
                 session: bool = False):
        self.out, self.session = out or sys.stdout, session
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=session)
        self.started = time.monotonic()
        self.stop_sent: float | None = None  # when a pool told it to stop
        self._tail = ""
        self._reader = threading.Thread(target=self._read, args=(prefix, echo), daemon=True)
        self._reader.start()

    def _write(self, text: str) -> None:
        with _OUT_LOCK:
            self.out.write(text)
            self.out.flush()

    def _read(self, prefix: str | None, echo: bool) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        fd = self.proc.stdout.fileno()
        while chunk := os.read(fd, 65536):
            text = decoder.decode(chunk)
            self._tail = (self._tail + text)[-8000:]
            if echo and prefix is None:
                self._write(text)
            elif echo:
                *lines, pending = re.split(r"[\r\n]", pending + text)
                shown = "".join(f"{prefix}{line}\n" for line in lines if line.strip())
                if shown:
                    self._write(shown)
        if echo and prefix is not None and pending.strip():
            self._write(f"{prefix}{pending}\n")
        self.proc.stdout.close()

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join()
        return rc

    def signal(self, signum: int) -> None:
        """Send `signum` to the child (its whole session when it has one), if it still runs."""
        if self.proc.poll() is not None:
            return
        try:
            if self.session:
                os.killpg(self.proc.pid, signum)
            else:
                self.proc.send_signal(signum)
        except ProcessLookupError:
            pass

    @property
    def tail(self) -> list[str]:
        return [l.strip() for l in self._tail.replace("\r", "\n").splitlines() if l.strip()][-20:]


@dataclass
class Job:
    """One command of a pool, and what became of it."""

    name: str  # the prefix of its output lines when several run at once
    cmd: list[str]
    env: dict
    state: str = "waiting"  # waiting | running | finished | not started
    returncode: int | None = None
    seconds: float = 0.0
    note: str = ""  # why it was not started
    tail: list[str] = field(default_factory=list)


class _Stop:
    """SIGINT / SIGTERM to this process become a flag the pool acts on (main thread only); a
    second Ctrl-C leaves at once."""

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handler(self, signum, frame):
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


@dataclass
class Pool:
    """How `run_pool` runs its jobs; see there."""

    width: int = 1
    admit: Callable[[Job], str | None] | None = None  # a reason not to start a job, or None
    deadline: float | None = None  # time.monotonic() after which running jobs are stopped
    on_start: Callable[[Job], None] | None = None
    on_end: Callable[[Job], str | None] | None = None  # may return a reason to stop the pool
    heartbeat: float = 60.0  # seconds between "still running" lines (several at once only)
    grace: float = 300.0  # seconds a stopped child has to write its checkpoint before SIGKILL
    label: str = "pool"


def run_pool(jobs: list[Job], pool: Pool) -> str | None:
    """Run `jobs` in order, at most `pool.width` at once, each in its own process (output prefixed
    with the job's name when several run at once). Returns why it stopped early, or None: "SIGINT"
    or "SIGTERM" (this process received it), "deadline", or the reason `on_end` gave. On a stop
    every running child gets SIGTERM once (the training loop writes its checkpoint on it) and is
    waited for; jobs not started yet are marked "not started" with the reason."""
    running: list[tuple[Job, Running]] = []
    queue, stopped, beat = list(jobs), None, time.monotonic()
    with _Stop() as stop:
        while queue or running:
            if stopped is None and stop.signum is not None:
                stopped = signal.Signals(stop.signum).name
            if stopped is None and pool.deadline is not None and time.monotonic() >= pool.deadline:
                stopped = "deadline"
            if stopped is not None:
                _stop_all(running, queue, stopped, pool)
            while stopped is None and queue and len(running) < pool.width:
                _start(queue.pop(0), pool, running)
            for job, child in [r for r in running if r[1].poll() is not None]:
                running.remove((job, child))
                why = _finish(job, child, pool)
                stopped = stopped or why
            if pool.width > 1 and running and time.monotonic() - beat >= pool.heartbeat:
                beat = time.monotonic()
                print(f"[{pool.label}] running: " + ", ".join(f"{j.name} ({time.monotonic() - c.started:.0f} s)"
                                                          for j, c in running), flush=True)
            time.sleep(0.05 if running else 0)
    return stopped


def _start(job: Job, pool: Pool, running: list) -> None:
    reason = pool.admit(job) if pool.admit is not None else None
    if reason:
        job.state, job.note = "not started", reason
        return
    if pool.on_start is not None:
        pool.on_start(job)
    job.state = "running"
    running.append((job, Running(job.cmd, job.env, prefix=f"[{job.name}] " if pool.width > 1 else None)))


def _finish(job: Job, child: Running, pool: Pool) -> str | None:
    job.returncode = child.wait()
    job.seconds, job.tail, job.state = time.monotonic() - child.started, child.tail, "finished"
    return pool.on_end(job) if pool.on_end is not None else None


def _stop_all(running: list, queue: list, why: str, pool: Pool) -> None:
    for job in queue:
        job.state, job.note = "not started", f"stopped ({why}) before it started"
    queue.clear()
    for job, child in running:
        if child.stop_sent is None:
            child.stop_sent = time.monotonic()
            print(f"[{pool.label}] {job.name}: {why}: sending SIGTERM (a training run checkpoints and exits)",
                  flush=True)
            child.signal(signal.SIGTERM)
        elif time.monotonic() - child.stop_sent > pool.grace:
            print(f"[{pool.label}] {job.name}: still running {pool.grace:.0f} s after SIGTERM; killing it", flush=True)
            child.signal(signal.SIGKILL)
            child.stop_sent = float("inf")
