"""`lra bench --scaling`: training step time and peak memory against sequence length.

For each attention, lengths 256, 512, ... up to --max-length (default 65536) at a fixed batch
(default 1), each point one bench measurement (lra/measurements.py) with `kind: "scaling"`; then
the slope of log(time) and log(memory) against log(length) over the longest --fit-points lengths
measured (softmax about 2, linear methods about 1). A sweep stops going longer for an attention
once a point runs out of memory or a training step takes longer than --max-step-seconds, or when
the last two points predict the next step would take more than twice that; the stop and its
reason are recorded in the last point's record.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path

from tabulate import tabulate

from lra.measurements import BenchCell, Plan, base_config, fmt, measure_cell
from lra_base.errors import ConfigError

SCALING_LENGTHS = tuple(2 ** k for k in range(8, 17))  # 256 .. 65536
MAX_STEP_SECONDS = {"cpu": 20.0, "cuda": 10.0}


def add_arguments(p) -> None:
    s = p.add_argument_group("scaling sweep (--scaling)")
    s.add_argument("--scaling", action="store_true", help="time and memory against sequence length")
    s.add_argument("--lengths", default=None, help="comma list (default 256,512,...,65536)")
    s.add_argument("--max-length", type=int, default=None, help="longest length of the default list (65536)")
    s.add_argument("--max-step-seconds", type=float, default=None,
                   help="stop an attention's sweep after a training step this long (default 20 CPU, 10 CUDA); "
                        "without --scaling, a warm-up step this long ends the warm-up and one step is timed "
                        "(recorded as over_budget; default no cap)")
    s.add_argument("--fit-points", type=int, default=4, help="longest lengths the slope is fitted on (default 4)")


def scaling_lengths(args) -> list[int]:
    if args.lengths:
        try:
            lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
        except ValueError:
            raise ConfigError(f"--lengths takes a comma list of integers, got {args.lengths!r}") from None
        if not lengths or lengths[0] < 1:
            raise ConfigError(f"--lengths must be positive, got {args.lengths!r}")
        return lengths
    top = args.max_length or SCALING_LENGTHS[-1]
    return [n for n in SCALING_LENGTHS if n <= top] or [SCALING_LENGTHS[0]]


def fit_slope(lengths, values) -> float | None:
    """Least-squares slope of log(value) against log(length); None with fewer than two points."""
    pts = [(math.log(n), math.log(v)) for n, v in zip(lengths, values) if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def stop_reason(first: dict, points: list, lengths: list[int], i: int, budget: float) -> str | None:
    """Why the sweep goes no longer after length lengths[i] (None: it goes on). `first` is the
    point's first phase; `points` the (length, step seconds, MiB) measured so far."""
    n = lengths[i]
    if first["status"] != "ok":
        return f"{first['status']} at length {n}"
    if first.get("over_budget") or first["step_seconds"] > budget:
        return (f"a training step took {first['first_step_seconds'] or first['step_seconds']:.1f} s at "
                f"length {n} (budget {budget:g} s, --max-step-seconds)")
    if i + 1 < len(lengths) and len(points) >= 2:
        (n0, t0, _), (n1, t1, _) = points[-2], points[-1]
        slope = max(1.0, math.log(t1 / t0) / math.log(n1 / n0)) if t0 > 0 and t1 > 0 else 1.0
        predicted = t1 * (lengths[i + 1] / n1) ** slope
        if predicted > 2 * budget:
            return (f"predicted {predicted:.0f} s per training step at length {lengths[i + 1]} from the "
                    f"last two points (over 2 x {budget:g} s budget)")
    return None


def sweep(args, plan: Plan, task: str, attention: str, info: dict) -> tuple[list, str | None]:
    """One attention's sweep over info["lengths"]: its (length, step seconds, MiB) points and why it stopped."""
    lengths, budget = info["lengths"], info["max_step_seconds"]
    points, stop = [], None
    for i, n in enumerate(lengths):
        cfg = base_config(args, task, attention)
        cfg.data.seq_len, cfg.train.batch_size = n, info["batch_size"]
        point = dict(info, stop_reason=None, skipped_lengths=[])
        cell = BenchCell(task, attention, cfg, f"scaling sweep at batch {info['batch_size']}", kind="scaling",
                         scaling=point)
        # Decide whether the sweep goes on before the record is written, so the reason lands in it.
        record = measure_cell(args, plan, cell, max_step_seconds=budget, decide=lambda first: _decide(
            first, points, lengths, i, budget, point))
        stop = point["stop_reason"]
        m = record["metrics"]
        ms = m["train_step_seconds"] * 1000 if m["train_step_seconds"] else None
        print(f"[scaling] {task} / {attention} length {n}: {record['status']}, {fmt(ms, '.1f')} ms/step, "
              f"{fmt(m['peak_memory_mb'], '.0f')} MiB -> {Path(record['_path']).name}", flush=True)
        if stop:
            if point["skipped_lengths"]:
                print(f"[scaling]   stop: {stop}; not measured: {point['skipped_lengths']}", flush=True)
            break
    return points, stop


def _decide(first: dict, points: list, lengths: list[int], i: int, budget: float, point: dict) -> None:
    """Add the point to `points` and set its stop reason and the lengths it leaves unmeasured."""
    if first["status"] == "ok":
        points.append((lengths[i], first["step_seconds"], first.get("peak_memory_mb")))
    point["stop_reason"] = stop_reason(first, points, lengths, i, budget)
    if point["stop_reason"]:
        point["skipped_lengths"] = lengths[i + 1:]


def run(args, plan: Plan, task_names: list[str], attention_names: list[str]) -> int:
    lengths = scaling_lengths(args)
    batch = args.batch_size or 1
    budget = args.max_step_seconds or MAX_STEP_SECONDS["cuda" if plan.device.type == "cuda" else "cpu"]
    info = {"sweep_id": uuid.uuid4().hex[:10], "lengths": lengths, "batch_size": batch, "max_step_seconds": budget,
            "fit_points": args.fit_points}
    print(f"[scaling] sweep {info['sweep_id']}: lengths {lengths[0]}..{lengths[-1]}, batch {batch}, on "
          f"{plan.env['device_name']}; stop after a training step over {budget:g} s or an out-of-memory", flush=True)
    summary = []
    for task in task_names:
        for attention in attention_names:
            points, stop = sweep(args, plan, task, attention, info)
            fit = points[-args.fit_points:]
            t_slope = fit_slope([p[0] for p in fit], [p[1] for p in fit])
            m_slope = fit_slope([p[0] for p in fit], [p[2] for p in fit])
            summary.append([task, attention, len(points), points[-1][0] if points else "-",
                            fmt(t_slope, ".2f"), fmt(m_slope, ".2f"), stop or "-"])
    print()
    print(tabulate(summary, headers=["task", "attention", "points", "longest", "time slope", "memory slope", "stopped"]))
    return 0
