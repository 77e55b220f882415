"""The budget arithmetic of `lra campaign`: what each piece of work is expected to cost, from what
the campaign has measured so far.

Estimates come, best first, from this campaign's own bench records (the step time of the very
model, batch and length a quick-preset run trains), from the preflight's step times (ListOps'
paper shape) scaled by tokens per step (and by length again for an attention that does not claim
linear memory), and otherwise from the constants below. They are corrected as work finishes:
each bench task rescales the next by how far off it was, and the training stage learns how much
slower K runs side by side are than one alone. They decide what is started; the deadline, not
the estimate, decides when running work is stopped.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
from pathlib import Path

import attentions
import tasks
from lra.core.records import read_records

BENCH_SHARE = 0.55  # of the budget left when the bench starts, when data and training follow it
DATA_SHARE = 0.12  # of the budget left when the data stage starts: the time for Pathfinder images
BENCH_TIMING = {  # short: a campaign measures 78 cells in minutes; every record keeps its timing
    "cuda": {"warmup": 2, "steps": 5, "min_seconds": 0.3, "max_step_seconds": 1.0},
    "cpu": {"warmup": 1, "steps": 3, "min_seconds": 1.0, "max_step_seconds": 10.0},
    "tiny": {"warmup": 1, "steps": 1, "min_seconds": 0.0, "max_step_seconds": 5.0},
}
STARTUP = {"cuda": 8.0, "cpu": 6.0}  # seconds: a fresh Python with torch (and its CUDA context)
GRACE = 20.0  # seconds a training run stopped by the deadline has to write its checkpoint
CELL_OVERHEAD = 1.0  # seconds to build a model and take its first step
UNKNOWN_STEP = {"cuda": 0.05, "cpu": 1.0}  # a step time nothing has measured yet
# Generation rates per core (measured on the development machine: `lra data generate` prints
# rows or images per CPU-second): ListOps about 470 rows, Pathfinder-32 about 43 images.
LISTOPS_ROWS_PER_CORE_S, PATHFINDER_IMAGES_PER_CORE_S = 400.0, 40.0
LISTOPS_OFFICIAL = 100_000  # 96k / 2k / 2k
PATHFINDER_MIN, PATHFINDER_MAX = 20_000, 200_000
TINY = {"listops": {"train": 256, "val": 64, "test": 64, "min_length": 10, "max_length": 60},
        "pathfinder": {"images": 64, "per_batch": 32}}


class Stopped(Exception):
    """SIGTERM or SIGINT reached the campaign; the stage it was in ends through its cleanup."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def cores() -> int:
    return os.cpu_count() or 1


def preflight_seconds(c) -> float:
    return 30.0 if c.tiny else {"cuda": 60.0, "cpu": 150.0}[c.device]


# --- step times -----------------------------------------------------------------------------------


def records(c) -> list[dict]:
    """The campaign's records, read again only when runs/ has changed."""
    runs = c.results / "runs"
    names = tuple(sorted(p.name for p in runs.glob("*.json"))) if runs.exists() else ()
    cached = getattr(c, "_records", None)
    if cached is None or cached[0] != names:
        cached = (names, read_records(c.results))
        setattr(c, "_records", cached)
    return cached[1]


def bench_step(c, task: str, attention: str, batch: int, seq_len: int, phase: str) -> float | None:
    """This device's measured step time of (task, attention) at `seq_len`, scaled to `batch`."""
    for r in reversed(records(c)):
        b = r.get("bench") or {}
        if (r.get("kind") == "bench" and r["status"] == "ok" and r["task"] == task and r["attention"] == attention
                and (r.get("env") or {}).get("device") == c.device and b.get("seq_len") == seq_len):
            step = (r.get("metrics") or {}).get(f"{phase}_step_seconds")
            return step * batch / b["batch_size"] if step else None
    return None


def preflight_step(c, task: str, attention: str, batch: int, seq_len: int) -> float | None:
    """The preflight's training step time of `attention`, scaled to this task's batch and length."""
    path = c.results / "preflight.json"
    s = (json.loads(path.read_text())["steps"] if path.exists() else {}).get(attention) or {}
    if s.get("status") != "ok" or not s.get("step_seconds"):
        return None
    t = tasks.get(task)
    scale = batch * t.num_inputs * seq_len / (s["batch_size"] * s["seq_len"])
    if not getattr(attentions.get(attention).cls, "linear_memory", False):
        scale *= max(1.0, seq_len / s["seq_len"])  # quadratic in length, or nothing claims otherwise
    return s["step_seconds"] * scale


def step_seconds(c, task: str, attention: str, batch: int, seq_len: int, phase: str = "train") -> float | None:
    step = bench_step(c, task, attention, batch, seq_len, phase)
    if step is None and phase == "train":
        step = preflight_step(c, task, attention, batch, seq_len)
    return step


# --- bench ----------------------------------------------------------------------------------------


def bench_seconds(c, cells: list, per_task: bool) -> float:
    """Measuring `cells`: both phases, warm-up and timed steps (a step over the cap takes two),
    the minimum timing, a model per measurement, process start-ups."""
    t = BENCH_TIMING["tiny" if c.tiny else c.device]
    start = STARTUP[c.device]
    total = start if per_task else 0.0
    for cell in cells:
        cfg = cell.config
        step = step_seconds(c, cell.task, cell.attention, cfg.train.batch_size, cfg.data.seq_len)
        step = UNKNOWN_STEP[c.device] if step is None else step
        for phase_step in (step, step / 3):  # train, then eval (forward only)
            steps = 2 if phase_step > t["max_step_seconds"] else t["warmup"] + t["steps"]
            total += CELL_OVERHEAD + max(steps * phase_step, t["min_seconds"]) + (0 if per_task else start)
    return total


def calibrate(scale: float, estimated: float, actual: float) -> float:
    """The factor the next estimate is multiplied by, after one that was `estimated` took `actual`."""
    return actual / estimated if estimated > 0 and actual > 0 else scale


# --- data -----------------------------------------------------------------------------------------


def listops_sizes(c) -> dict:
    return dict(TINY["listops"]) if c.tiny else {}  # the generator's defaults are the official sizes


def pathfinder_generate(c, left: float, root: Path | None = None) -> dict:
    """Generator options: as many images as DATA_SHARE of the budget left draws on every core,
    between 20k and 200k; an interrupted earlier generation is finished with its own settings."""
    if c.tiny:
        return dict(TINY["pathfinder"])
    manifest = (root / "GENERATED.json") if root is not None else None
    if manifest is not None and manifest.exists():
        old = json.loads(manifest.read_text())
        if not old.get("complete"):
            return {"images": old["images"], "per_batch": old["per_batch"]}
    n = PATHFINDER_IMAGES_PER_CORE_S * cores() * DATA_SHARE * max(0.0, left)
    return {"images": int(min(PATHFINDER_MAX, max(PATHFINDER_MIN, round(n, -3))))}


def data_seconds(c, pathfinder: dict) -> float:
    """Generating what is missing and tokenising it (about 20 s at the full sizes)."""
    if c.tiny:
        return 15.0
    need = 0.0
    if not (c.data_dir / "lra_release" / "listops-1000" / "basic_train.tsv").exists():
        need += LISTOPS_OFFICIAL / (LISTOPS_ROWS_PER_CORE_S * cores())
    if not (c.data_dir / "lra_release" / "pathfinder32" / "curv_contour_length_14" / "metadata").exists():
        need += pathfinder["images"] / (PATHFINDER_IMAGES_PER_CORE_S * cores())
    return need + 20.0


def too_small(c, name: str, total: int) -> str | None:
    """Why a found dataset is not the size the campaign trains on (None: it is)."""
    least = {"listops": LISTOPS_OFFICIAL, "pathfinder": PATHFINDER_MIN}.get(name)
    if c.tiny or least is None or total >= least:
        return None
    return (f"{total} examples under {c.data_dir}, fewer than the {least} the campaign trains on: move them away "
            f"or pass another --data-dir")


# --- training -----------------------------------------------------------------------------------


def train_attentions(c) -> list[str]:
    """Every attention; the rehearsal trains two (the baseline and the default) to keep it short."""
    return list(dict.fromkeys(["softmax", attentions.default_name()])) if c.tiny else ["all"]


def split_sizes(c, task: str) -> tuple[int, int]:
    """(dev, test) examples of a task, as the data stage counted them (LRA's 2000 each otherwise)."""
    counts = (((c.state.get("stages") or {}).get("data") or {}).get("data") or {}).get(task, {}).get("counts") or {}
    return counts.get("val", 2000), counts.get("test", 2000)


def train_seconds(c, cfg) -> float | None:
    """A training run alone: start-up, the steps, the dev evaluations and the test, plus 10%
    (data loading, the finite-checks)."""
    t = cfg.train
    step = step_seconds(c, cfg.task, cfg.attention, t.batch_size, cfg.data.seq_len)
    if step is None:
        return None
    ev = step_seconds(c, cfg.task, cfg.attention, t.batch_size, cfg.data.seq_len, "eval") or step / 3
    dev, test = split_sizes(c, cfg.task)
    evals = t.steps // t.eval_every + 1
    batches = evals * math.ceil(min(t.eval_samples or dev, dev) / t.batch_size) + math.ceil(test / t.batch_size)
    return STARTUP[c.device] + 1.1 * (t.steps * step + batches * ev)


class Packing:
    """How much longer a run takes beside K - 1 others than alone: assumed 1 + (K - 1) / 2 at
    first (a GPU that one small model leaves half idle), then learnt: the median of actual over
    estimated seconds of the runs finished so far (which also absorbs how far off the estimates are)."""

    def __init__(self, k: int):
        self.factor = 1.0 + (k - 1) / 2

    def learn(self, finished: list[tuple[float, float | None]]) -> None:
        ratios = [actual / est for actual, est in finished if est and actual]
        if ratios:
            self.factor = statistics.median(ratios)
