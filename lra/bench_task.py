"""`lra bench --isolation task`: every cell of a task measured in one fresh process.

On CUDA the peak memory of a measurement comes from the allocator's counters, reset before each
measurement (lra/core/measure.py), so a cell does not need a process of its own: one process per
task measures its cells one after another, and a Table 6 sweep costs a few process start-ups
instead of one per (cell, phase). Between measurements the process drops what it held (garbage
collected, the allocator's cache emptied); the memory still allocated when a measurement starts
is recorded beside its figures (`allocated_before_mb`, about 0). On CPU a later cell's resident
memory could be lowered by pages an earlier cell left to the allocator, so `lra bench` keeps one
process per cell there (lra/measurements.py); this path is the CUDA default.

A crash ends the process: the measurement it was in is recorded as failed (as "oom" when the
kernel killed it), and a fresh process takes the cells left. A measurement silent for --timeout
seconds is treated the same way, and so is a failure that leaves the CUDA context unusable (the
process records it and exits, so it is not blamed on the cells after it). Each cell's record is written as soon as its phases are in.

    python -m lra.bench_task SPECS.json OUT.jsonl      the measuring process (one JSON line per measurement)
"""

from __future__ import annotations

import gc
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

import torch

from lra.core.env import pick_device
from lra.core.isolation import Running, child_env, die_with_parent, killed_by_oom_killer, python_command
from lra.core.records import now, write_record
from lra.measurements import BenchCell, Plan, build_record, measure

ISOLATION = "one process per task"


# --- the measuring process ----------------------------------------------------------------------


BROKEN = 75  # exit status: the CUDA context failed; start a fresh process for the measurements left


def measure_all(specs: list[dict], out_path: Path) -> int:
    """Measure every spec in turn, appending one JSON line per result to `out_path` as it ends.
    Returns BROKEN when a failure left the CUDA context unusable (an illegal access, a device-side
    assert: every later call would fail too, and be blamed on the wrong cell)."""
    with open(out_path, "a") as out:
        for spec in specs:
            device = pick_device(spec["config"]["device"])
            before = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None
            result = measure(spec, limit_memory=True) | {"isolation": ISOLATION, "allocated_before_mb": before}
            out.write(json.dumps({"key": spec["key"], **result}, default=str) + "\n")
            out.flush()
            gc.collect()  # nothing of this measurement may be counted in the next one
            if device.type == "cuda" and not usable(device):
                return BROKEN
    return 0


def usable(device: torch.device) -> bool:
    """Can this process still run work on `device`? (frees the allocator's cache on the way)"""
    try:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        return float((torch.ones(1, device=device) + 1).item()) == 2.0
    except Exception:
        return False


def _worker_main(argv: list[str]) -> int:
    die_with_parent()
    return measure_all(json.loads(Path(argv[0]).read_text()), Path(argv[1]))


# --- the parent -----------------------------------------------------------------------------------


class TaskMeasurement:
    """The cells of one task, measured in as few fresh processes as crashes allow."""

    def __init__(self, args, plan: Plan, cells: list[BenchCell], deadline: float | None = None, on_record=None):
        self.args, self.plan, self.cells, self.deadline, self.on_record = args, plan, cells, deadline, on_record
        self.specs = {f"{i}:{phase}": self.spec(i, cell, phase) for i, cell in enumerate(cells) for phase in plan.phases}
        self.results: dict[str, dict] = {}
        self.created = now()
        self.records: list[dict] = []
        self.recorded: set[int] = set()

    def spec(self, i: int, cell: BenchCell, phase: str) -> dict:
        return {"key": f"{i}:{phase}", "config": cell.config.to_dict(), "phase": phase, **self.plan.timing,
                "max_step_seconds": getattr(self.args, "max_step_seconds", None),
                "memory_limit_mb": self.plan.memory_limit_mb, "threads": self.args.threads}

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def run(self) -> list[dict]:
        """Measure until every cell has its record or the deadline passes; returns the records."""
        while len(self.results) < len(self.specs) and not self.out_of_time():
            left = [k for k in self.specs if k not in self.results]
            with tempfile.TemporaryDirectory(prefix="lra-bench-task-") as d:
                self.process(left, Path(d))
        return self.records

    def process(self, left: list[str], folder: Path) -> None:
        """One measuring process for the measurements `left`; after it ends, the one it was in
        (if it did not finish them all) gets a failed result with the reason."""
        spec_path, out_path = folder / "specs.json", folder / "out.jsonl"
        spec_path.write_text(json.dumps([self.specs[k] for k in left], default=str))
        child = Running(python_command("-m", "lra.bench_task", str(spec_path), str(out_path)), child_env(),
                        echo=False, session=True)
        seen, last, why = 0, time.monotonic(), None
        try:
            while child.poll() is None and why is None:
                time.sleep(0.1)
                seen, last = self.take(out_path, seen, last)
                if time.monotonic() - last > self.args.timeout:
                    why = f"timed out after {self.args.timeout:.0f} s without finishing a measurement (--timeout)"
                elif self.out_of_time():
                    why = "deadline"
        finally:
            if child.poll() is None:  # out of time, or this process was interrupted
                child.signal(signal.SIGKILL)
        rc = child.wait()
        self.take(out_path, seen, last)
        missing = [k for k in left if k not in self.results]
        if missing and why != "deadline" and rc != BROKEN:  # BROKEN: its last result says why
            self.fail(missing[0], rc, why, child.tail)

    def take(self, out_path: Path, seen: int, last: float) -> tuple[int, float]:
        """Read the results written since line `seen`; write the records of the cells now complete."""
        if not out_path.exists():
            return seen, last
        lines = out_path.read_text().splitlines(keepends=True)
        complete = [l for l in lines[seen:] if l.endswith("\n")]
        for line in complete:
            result = json.loads(line)
            self.results[result.pop("key")] = result
            last = time.monotonic()
        if complete:
            self.write_complete()
        return seen + len(complete), last

    def fail(self, key: str, rc: int | None, why: str | None, tail: list[str]) -> None:
        phase = self.specs[key]["phase"]
        result = {"phase": phase, "status": "failed", "isolation": ISOLATION}
        if why is not None:
            result["error"] = why
        elif killed_by_oom_killer(rc):
            result |= {"status": "oom", "error": "the measuring process was killed (SIGKILL), most likely by the "
                                                "kernel's out-of-memory killer"}
        else:
            result["error"] = f"the measuring process exited with status {rc}: " + ("\n".join(tail[-8:]) or "no output")
        self.results[key] = result
        self.write_complete()

    def write_complete(self) -> None:
        for i, cell in enumerate(self.cells):
            keys = [f"{i}:{phase}" for phase in self.plan.phases]
            if i in self.recorded or any(k not in self.results for k in keys):
                continue
            results = {self.specs[k]["phase"]: self.results[k] for k in keys}
            record = build_record(cell, results, timing=self.plan.timing, memory_limit_mb=self.plan.memory_limit_mb,
                                  env_fallback=self.plan.env, created_at=self.created)
            record["_path"] = str(write_record(self.args.results_dir, record))
            self.recorded.add(i)
            self.records.append(record)
            if self.on_record is not None:
                self.on_record(record)


def measure_task(args, plan: Plan, cells: list[BenchCell], deadline: float | None = None, on_record=None) -> list[dict]:
    """Every phase of every cell in `cells` measured in one fresh process (a fresh one after a
    crash), each cell's record written (and handed to `on_record`) as soon as its phases are in.
    Cells still unmeasured when `deadline` (time.monotonic()) passes get no record."""
    return TaskMeasurement(args, plan, cells, deadline, on_record).run()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
