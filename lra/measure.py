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
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import torch

MiB = 1024 * 1024


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
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # best effort


class PeakMemory:
    """Peak memory added between start() and peak_mb(); see the module docstring for the method."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = "unmeasured"
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
            return max(0, self._sampled_peak - self._baseline) / MiB
        return None
