"""What `lra report` prints: a few lines about the records it read, never the leaderboard itself
(the file is tens of kilobytes of markdown; `lra report --print` shows it)."""

from __future__ import annotations

from tabulate import tabulate

from lra.report.runs import Labeler, Run, latest, load_runs, task_label

MAX_ROWS = 20


def accuracy_rows(runs: list[Run]) -> list[list]:
    """(preset, task, attention, seeds, mean test accuracy) of the ok training runs, latest per seed."""
    cells: dict = {}
    for r in runs:
        if r.kind == "train" and r.rec.get("status") == "ok" and r.metric("test_accuracy") is not None:
            cells.setdefault((r.rec.get("preset") or "?", r.rec["task"], r.label), {}).setdefault(
                r.rec.get("seed"), []).append(r)
    rows = []
    for (preset, task, label), per_seed in sorted(cells.items()):
        accs = [latest(rs).metric("test_accuracy") for rs in per_seed.values()]
        rows.append([preset, task_label(task), label, len(accs), f"{sum(accs) / len(accs):.2f}"])
    return rows


def bench_lines(runs: list[Run]) -> list[str]:
    """One line per machine with measurements: how many bench and scaling records, how many ok."""
    per_device: dict = {}
    for r in runs:
        if r.kind in ("bench", "scaling"):
            entry = per_device.setdefault(r.device_group[1] + ", " + r.device_group[2], {}).setdefault(r.kind, [0, 0])
            entry[0] += 1
            entry[1] += r.rec.get("status") == "ok"
    return [f"  {device}: " + "; ".join(f"{kind} {n} records ({ok} ok)" for kind, (n, ok) in sorted(kinds.items()))
            for device, kinds in sorted(per_device.items())]


def summary(records: list[dict]) -> list[str]:
    runs = load_runs(records, Labeler())
    failed = sum(r.rec.get("status") != "ok" for r in runs)
    lines = [f"{len(runs)} records ({failed} not ok)"]
    rows = accuracy_rows(runs)
    if rows:
        lines += ["", tabulate(rows[:MAX_ROWS], headers=["preset", "task", "attention", "seeds", "test acc %"],
                                    disable_numparse=True)]
        if len(rows) > MAX_ROWS:
            lines.append(f"... and {len(rows) - MAX_ROWS} more rows in the file")
    measured = bench_lines(runs)
    if measured:
        lines += ["", "measurements (Table 6, scaling):", *measured]
    return lines
