"""Throughput and peak-memory measurement, the same for every attention.

Throughput: wall time of the measured steps only, with the device synchronised at each start and
stop, so queued GPU work is counted where it belongs. Samples per second = samples / seconds.

Peak memory, in MiB:
- CUDA: torch.cuda.max_memory_allocated() after torch.cuda.reset_peak_memory_stats(): the peak of
  memory held by tensors during the measured steps, as the PolaFormer paper's Table 6 reports.
- CPU (Linux): the kernel's resident-set high-water mark is reset to the current resident size by
  writing 5 to /proc/self/clear_refs, and the peak added by the measurement is VmHWM - VmRSS(at
  reset). Nothing the process did before the reset pollutes it.
- elsewhere: a sampling thread reads the resident size every few milliseconds (method recorded).
- CPU with glibc's malloc settings in the environment that keep freed memory in the process
  (MALLOC_MMAP_MAX_, MALLOC_TRIM_THRESHOLD_ and the others of lra/core/env.py's KEEPING): not
  told. Kept memory is reused without the resident set moving, so the resident set no longer
  follows the tensors; the record says why.

`time_steps` is the one timing routine: warm-up steps, then timed steps until enough steps and
seconds have passed, with the peak memory of both. `lra bench`, `lra data throughput` and
`python -m lra.attn_bench` all time their step with it.
"""

from __future__ import annotations

import gc
import re
import resource
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lra.core.env import KEEPING, malloc_settings

MiB = 1024 * 1024
MIN_CPU_PEAK_MB = 1.0  # below this a CPU resident-memory rise is allocator noise, not the steps' needs


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stopwatch:
    """Accumulates synchronised wall time over start/stop sections, and the samples done in them."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self.samples = 0
        self._t0: float | None = None

    @property
    def running(self) -> bool:
        return self._t0 is not None

    def start(self) -> None:
        if self._t0 is None:
            synchronize(self.device)
            self._t0 = time.perf_counter()

    def stop(self) -> None:
        if self._t0 is not None:
            synchronize(self.device)
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    def count(self, samples: int) -> None:
        if self._t0 is not None:
            self.samples += samples

    def rate(self) -> float | None:
        """Samples per second so far (None before anything was measured)."""
        seconds = self.seconds + ((time.perf_counter() - self._t0) if self._t0 is not None else 0.0)
        return self.samples / seconds if seconds > 0 and self.samples else None

    def state_dict(self) -> dict:
        return {"seconds": self.seconds, "samples": self.samples}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self.samples = state["seconds"], state["samples"]


def _proc_status() -> dict[str, int]:
    text = Path("/proc/self/status").read_text()
    return {k: int(v) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", text, re.M)}


def _rss_bytes() -> int:
    try:
        return _proc_status()["VmRSS"]
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # best effort


class PeakMemory:
    """Peak memory added between start() and peak_mb(); see the module docstring for the method."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "unmeasured"
        self._withheld_by = ""  # the keeping malloc settings, when they withhold the CPU peak
        self._baseline = 0
        self._sampler: threading.Thread | None = None
        self._sampled_peak = 0
        self._stop = threading.Event()

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.method = "cuda_max_memory_allocated"
            return
        keeping = malloc_settings(KEEPING)
        if keeping:  # freed memory stays in the process: RSS no longer follows the tensors
            self._withheld_by = " ".join(f"{k}={v}" for k, v in keeping.items())
            self.method = "withheld: " + self._withheld_by
            return
        # Garbage freed while we measure lowers the resident set and hides the peak under the
        # starting point: collect it first (a process that ran earlier work holds cycles).
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self._baseline = _proc_status()["VmRSS"]
            self.method = "cpu_rss_high_water_mark"
        except (OSError, KeyError):
            self._baseline = _rss_bytes()
            self._sampled_peak = self._baseline
            self.method = "cpu_rss_sampled"
            self._stop.clear()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self._sampled_peak = max(self._sampled_peak, _rss_bytes())

    def peak_mb(self) -> float | None:
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / MiB
        if self.method == "cpu_rss_high_water_mark":
            return max(0, _proc_status()["VmHWM"] - self._baseline) / MiB
        if self.method == "cpu_rss_sampled":
            self._stop.set()
            if self._sampler is not None:
                self._sampler.join()
            self._sampled_peak = max(self._sampled_peak, _rss_bytes())  # the sampler may not have run since
            return max(0, self._sampled_peak - self._baseline) / MiB
        return None

    def reported(self) -> tuple[float | None, str | None]:
        """(peak MiB, None), or (None, why) when no figure can be told: nothing was measured, or on
        CPU the resident set barely rose because the steps reused memory the process already held
        (a run's data loading leaves freed memory behind), which says nothing about their needs."""
        peak = self.peak_mb()
        if self._withheld_by:
            return None, (f"not measured: malloc settings in the environment ({self._withheld_by}) decide when freed "
                          "memory goes back to the kernel, so the resident set does not follow the tensors")
        if peak is None:
            return None, "not measured: no training step ran in this process"
        if self.device.type != "cuda" and peak < MIN_CPU_PEAK_MB:
            return None, (f"not measurable here: the resident memory rose by only {peak:.2f} MiB, the steps reusing "
                          "memory the process already held; `lra bench` measures it in a fresh process")
        return peak, None


@dataclass(frozen=True)
class Timing:
    """How long to time a step: `warmup` untimed steps, then at least `steps` timed steps and at
    least `min_seconds`, at most `max_steps`. A warm-up step longer than `max_step_seconds` ends
    the warm-up and leaves one timed step (a point over a sweep's budget)."""

    warmup: int
    steps: int
    min_seconds: float
    max_steps: int
    max_step_seconds: float | None = None


def time_steps(step, device: torch.device, timing: Timing, samples_per_step: int, per_step: bool = False) -> dict:
    """Run `step()` as `timing` says; return the throughput, the time per step and the peak memory
    (counted from before the warm-up: its first step allocates what the timed steps reuse).
    Per-step times (median, min, mean) are kept on CPU, where work is synchronous and reading
    the clock costs nothing, and on CUDA when `per_step` asks for a synchronisation per step."""
    out = {"warmup_steps": 0, "first_step_seconds": None, "over_budget": False}
    memory = PeakMemory(device)
    memory.start()
    for i in range(timing.warmup):
        t0 = time.perf_counter()
        step()
        synchronize(device)
        seconds = time.perf_counter() - t0
        out["warmup_steps"] = i + 1
        if i == 0:
            out["first_step_seconds"] = seconds
        if timing.max_step_seconds and seconds > timing.max_step_seconds:
            out["over_budget"] = True
            break
    each = per_step or device.type == "cpu"
    least = 1 if out["over_budget"] else timing.steps
    timer, times = Stopwatch(device), []
    t_start = time.perf_counter()
    timer.start()
    n = 0
    while n < least or (not out["over_budget"] and n < timing.max_steps
                        and time.perf_counter() - t_start < timing.min_seconds):
        t0 = time.perf_counter()
        step()
        if each:
            synchronize(device)
            times.append(time.perf_counter() - t0)
        timer.count(samples_per_step)
        n += 1
    timer.stop()
    out.update(throughput=timer.rate(), step_seconds=timer.seconds / n, timed_steps=n,
               peak_memory_mb=memory.peak_mb(), memory_method=memory.method)
    if times:  # the spread shows how steady the machine was (a shared CPU is not)
        out.update(median_step_seconds=statistics.median(times), min_step_seconds=min(times),
                   mean_step_seconds=statistics.fmean(times))
    return out
