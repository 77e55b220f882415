"""Table 6 style: accuracy, training throughput and peak memory per task, one table per device
and precision, with the average ratios to the baseline, the paper's numbers beside ours."""

from __future__ import annotations

from dataclasses import asdict

from lra.core import paper_numbers as paper
from lra.core.config import ModelConfig
from lra.core.identity import measurement_key, normalise
from lra.report.context import Context
from lra.report.runs import (PUBLISHED, Run, describe_bench, describe_env, latest, length_label, md_table, num,
                             params_text, task_label)
from lra.report.table4 import PAPER4

PAPER6 = {c.attention: c for c in paper.TABLE6}  # the paper's Table 6 columns by our name


def intro(ctx: Context) -> str:
    shown = a_presets(ctx)
    which = f"{ctx.primary or 'no'} preset" if len(shown) <= 1 else f"one row per preset: {', '.join(shown)}"
    return (f"Per task: A accuracy % ({which}), T training throughput (samples/s: "
            "forward + backward + optimiser step, steady state after warm-up), M training peak memory (MiB: "
            "CUDA allocated memory after a reset; on CPU the resident memory the measurement added, each "
            "measurement in a fresh process). Ours are `lra bench` records at the task's paper length with "
            f"the paper model; the batch is the paper's unless the row says otherwise. Avg: T and M as the "
            f"ratio of the per-task means to {ctx.baseline}'s (how the paper's average row is computed), A "
            f"as the mean accuracy difference to {ctx.baseline}, over the tasks both have (count shown when "
            "not all). Published A is the paper's Table 4; published T has no stated unit, so compare ratios, "
            "not raw T, across machines. P: the measured model's trained parameters.")


def section(ctx: Context) -> list[str]:
    out = ["## Table 6 style: accuracy, throughput and memory", "", intro(ctx), ""]
    for group in groups(ctx) or [None]:
        title = f"{group[1]}, {group[2]}" if group else "no bench records yet"
        out += [f"### {title}", "", table(ctx, group), ""]
    out += ["### Every bench record that counts", "", bench_details(ctx), ""]
    return out


def paper_shape(r: Run) -> bool:
    """A Table 6 measurement: the training step measured, at the task's paper length, paper model."""
    b = r.rec.get("bench", {})
    return (b.get("seq_len") == b.get("paper_seq_len") and "train" in (b.get("phases") or {})
            and normalise(r.cfg.get("model")) == normalise(asdict(ModelConfig())))


def a_presets(ctx: Context) -> list[str]:
    """The presets with an A row: paper and quick, each its own row, never mixed; the smoke
    preset only when nothing else was trained (a pipeline check, labelled as such)."""
    real = [p for p in ctx.presets if p in ("paper", "quick")]
    return real or ([ctx.primary] if ctx.primary else [])


def a_label(preset: str | None) -> str:
    if preset == "quick":
        return "ours (quick preset: a tenth of the paper's steps)"
    return f"ours ({preset or 'no'} preset)"


def accuracy_means(ctx: Context, preset: str | None = None) -> dict:
    """(label, task) -> mean accuracy of `preset` (default the primary one) for Table 6's A rows."""
    preset = preset or ctx.primary
    out = {}
    for r in ctx.of_kind("train"):
        if r.rec.get("preset") == preset:
            out.setdefault((r.label, r.rec["task"]), []).append(r)
    means = {}
    for key, runs in out.items():
        per_seed = {}
        for r in runs:
            if r.rec.get("status") == "ok" and r.metric("test_accuracy") is not None:
                per_seed.setdefault(r.rec.get("seed"), []).append(r)
        vals = [latest(v).metric("test_accuracy") for v in per_seed.values()]
        if vals:
            means[key] = sum(vals) / len(vals)
    return means


def groups(ctx: Context) -> list[tuple]:
    """(device, device name, dtype) of every machine with paper-shape bench records, CUDA first."""
    return sorted({r.device_group for r in ctx.of_kind("bench") if paper_shape(r)},
                  key=lambda g: (g[0] != "cuda", g[1], g[2]))


def published(label: str, task: str, what: str) -> str:
    """The paper's A (from its Table 4), T or M cell for an attention and a task; "-" if none."""
    if what == "A":
        p = PAPER4.get(label)
        return num(p.accuracy.get(task), ".2f") if p and p.accuracy.get(task) is not None else "-"
    c = PAPER6.get(label)
    if c is None:
        return "-"
    v = (c.throughput if what == "T" else c.memory).get(task)
    return num(v, ".2f" if what == "T" else ".0f") if v is not None else "-"


def published_average(label: str, base: str, what: str) -> str:
    """The paper's average row: accuracy difference to the baseline, T and M ratios as printed."""
    if what == "A":
        p, b = PAPER4.get(label), PAPER4.get(base)
        return f"{p.average - b.average:+.2f}" if p and b and p.average is not None else "-"
    c = PAPER6.get(label)
    if c is None:
        return "-"
    return f"x{c.throughput_ratio if what == 'T' else c.memory_ratio:.2f}"


def coverage(n: int, total: int) -> str:
    """Says over how many tasks an average was taken, when not over all of them."""
    return "" if n == total else f" ({n} task{'s' * (n > 1)})"


def table(ctx: Context, group: tuple | None) -> str:
    runs = [r for r in ctx.of_kind("bench") if group is not None and r.device_group == group and paper_shape(r)]
    labels = ctx.attention_rows(runs)
    labels += [c.attention for c in paper.TABLE6 if c.attention not in labels]  # the paper's columns, always
    tasks_here = list(paper.TABLE6_TASKS) + sorted({r.rec["task"] for r in runs} - set(paper.TABLE6_TASKS))
    cell: dict = {}
    for task in tasks_here:
        for label in labels:
            found = latest([r for r in runs if r.label == label and r.rec["task"] == task])
            if found is not None:
                cell[(label, task)] = found
    acc = {preset: accuracy_means(ctx, preset) for preset in a_presets(ctx) or [None]}
    rows = []
    for task in tasks_here:
        rows += task_rows(ctx, group, task, labels, cell, acc)
    rows += average_rows(ctx, tasks_here, labels, cell, acc)
    headers = ["task", "", "source"] + [l + (f" (paper: {PAPER6[l].label})" if l in PAPER6 and PAPER6[l].label.lower() != l
                                             else "") for l in labels]
    return md_table(headers, rows)


def task_rows(ctx: Context, group, task, labels, cell, acc) -> list[list[str]]:
    """One task's six rows: A, T and M, ours above the paper's."""
    found = [cell[(l, task)] for l in labels if (l, task) in cell]
    batches = sorted({r.rec["bench"]["batch_size"] for r in found})
    length = found[0].rec["bench"]["seq_len"] if found else None
    head = f"{task_label(task)} ({length_label(length)})" if length else task_label(task)
    if len(batches) == 1:
        paper_b = found[0].rec["bench"]["paper_batch_size"]
        head += f", batch {batches[0]}" + ("" if batches[0] == paper_b else f" (paper {paper_b})")
    refs = {}
    for l in labels:
        r = cell.get((l, task))
        if r is not None:
            refs[l] = ctx.sources.add(
                f"Table 6 ({group[1]}, {group[2]}), {l} / {task_label(task)}: `{r.id}` ({r.rec['status']}); "
                f"{describe_env(r)}; {describe_bench(r)}; record {r.rel}"
                + (f"; error: {r.rec['error'].strip().splitlines()[-1][:200]}" if r.rec.get("error") else ""))

    def ours(l, metric, spec):
        r = cell.get((l, task))
        if r is None:
            return "no run"
        v = r.metric(metric)
        text = num(v, spec) if v is not None else r.rec["status"]
        if len(batches) > 1:
            text += f" (b={r.rec['bench']['batch_size']})"
        return f"{text} {refs[l]}"

    return [
        ["" if i else head, "A", a_label(preset)] + [num(a[(l, task)], ".2f") if (l, task) in a else "no run"
                                                    for l in labels]
        for i, (preset, a) in enumerate(acc.items())
    ] + [
        ["", "A", PUBLISHED] + [published(l, task, "A") for l in labels],
        ["", "T", "ours"] + [ours(l, "train_throughput", ".1f") for l in labels],
        ["", "T", PUBLISHED] + [published(l, task, "T") for l in labels],
        ["", "M", "ours"] + [ours(l, "peak_memory_mb", ".0f") for l in labels],
        ["", "M", PUBLISHED] + [published(l, task, "M") for l in labels],
        ["", "P", "ours"] + [params_text([cell[(l, task)].rec.get("num_params")]) if (l, task) in cell else "-"
                             for l in labels],
    ]


def average_rows(ctx: Context, tasks_here, labels, cell, acc) -> list[list[str]]:
    """The average rows against the baseline: the accuracy difference, and T and M as a ratio of
    means over the tasks both have (the paper's own average row is the ratio of its per-task
    means: 2642.49 / 2198.45 = 1.20)."""
    base = ctx.baseline

    def ratio(l, metric):
        pairs = [(cell[(l, t)].metric(metric), cell[(base, t)].metric(metric)) for t in tasks_here
                 if (l, t) in cell and (base, t) in cell]
        pairs = [(a, b) for a, b in pairs if a is not None and b]
        if not pairs:
            return "-"
        return f"x{sum(a for a, _ in pairs) / sum(b for _, b in pairs):.2f}" + coverage(len(pairs), len(tasks_here))

    def delta(l, a):
        pairs = [(a[(l, t)], a[(base, t)]) for t in tasks_here if (l, t) in a and (base, t) in a]
        if not pairs:
            return "-"
        return f"{sum(x - y for x, y in pairs) / len(pairs):+.2f}" + coverage(len(pairs), len(tasks_here))

    which = (lambda p: "ours (mean difference)") if len(acc) == 1 else (lambda p: f"ours ({p}: mean difference)")
    return [
        ["" if i else f"Avg (vs {base})", "A", which(p)] + [delta(l, a) for l in labels]
        for i, (p, a) in enumerate(acc.items())
    ] + [
        ["", "A", PUBLISHED] + [published_average(l, base, "A") for l in labels],
        ["", "T", "ours (ratio)"] + [ratio(l, "train_throughput") for l in labels],
        ["", "T", PUBLISHED] + [published_average(l, base, "T") for l in labels],
        ["", "M", "ours (ratio)"] + [ratio(l, "peak_memory_mb") for l in labels],
        ["", "M", PUBLISHED] + [published_average(l, base, "M") for l in labels],
    ]


def bench_details(ctx: Context) -> str:
    """Every bench record that counts (latest per cell), including the ones off the paper shape."""
    bench = ctx.of_kind("bench")
    latest_by_cell: dict = {}
    for r in bench:
        key = measurement_key(r.rec)
        if key not in latest_by_cell or r.order > latest_by_cell[key].order:
            latest_by_cell[key] = r
    order = {t: i for i, t in enumerate(ctx.tasks)}
    rows = []
    for r in sorted(latest_by_cell.values(), key=lambda r: (r.device_group, order.get(r.rec["task"], 99), r.label)):
        b = r.rec.get("bench", {})
        tr = (b.get("phases", {}).get("train") or {})
        rows.append([r.env.get("device", "?"), r.rec["task"], r.label, f"{b.get('batch_size')} ({b.get('paper_batch_size')})",
                     b.get("seq_len"), r.rec["status"], num(r.metric("train_throughput"), ".1f"),
                     num(r.metric("eval_throughput"), ".1f"), num(r.metric("peak_memory_mb"), ".0f"),
                     num(r.metric("eval_peak_memory_mb"), ".0f"),
                     num(tr.get("median_step_seconds") and tr["median_step_seconds"] * 1000, ".1f"),
                     num(tr.get("load_average"), ".2f"), f"{r.rec.get('num_params', '-'):,}"
                     if r.rec.get("num_params") else "-", f"`{r.id}`"])
    superseded = len(bench) - len(latest_by_cell)
    note = (f"\n\n{superseded} older bench record(s) of the same cells are superseded by these and not shown."
            if superseded else "")
    if not rows:
        return "No bench records yet." + note
    return md_table(["device", "task", "attention", "batch (paper)", "length", "status", "train samples/s",
                     "eval samples/s", "train MiB", "eval MiB", "median train step ms", "load avg",
                     "params", "run"], rows) + note
