"""The accuracy-against-throughput figure: ours (accuracy of the primary preset against training
throughput relative to the baseline, on the first Table 6 device) beside the paper's points."""

from __future__ import annotations

from lra.core import paper_numbers as paper
from lra.report.context import Context
from lra.report.figures import accuracy_figure
from lra.report.runs import latest, task_label
from lra.report.table4 import PAPER4
from lra.report.table6 import PAPER6, accuracy_means, groups, paper_shape

FIGURE = "accuracy-throughput.png"


def ours(ctx: Context, group: tuple | None, acc: dict) -> tuple[dict, list[str]]:
    """task -> [(label, throughput / baseline's, accuracy)] of our runs on `group`, and why each
    run with an accuracy is not drawn (a point needs a bench of its own and one of the baseline
    on the same machine)."""
    out: dict = {}
    if group is None:
        why = "no `lra bench` record on any machine (the x axis is training throughput)"
        return out, [why] if acc else []
    runs = [r for r in ctx.of_kind("bench") if r.device_group == group and paper_shape(r)]
    missing = []
    for task in ctx.tasks:
        with_acc = sorted(label for label, t in acc if t == task)
        base = latest([r for r in runs if r.label == ctx.baseline and r.rec["task"] == task])
        if base is None or not base.metric("train_throughput"):
            if with_acc:
                missing.append(f"{task_label(task)} ({', '.join(with_acc)}): no {ctx.baseline} bench on {group[1]} "
                               "to take ratios to")
            continue
        for label in sorted({r.label for r in runs} | set(with_acc)):  # a fixed order: a reproducible PNG
            r = latest([x for x in runs if x.label == label and x.rec["task"] == task])
            if r and r.metric("train_throughput") and (label, task) in acc:
                out.setdefault(task, []).append((label, r.metric("train_throughput") / base.metric("train_throughput"),
                                                 acc[(label, task)]))
            elif (label, task) in acc:
                missing.append(f"{label} / {task_label(task)}: no bench of its own on {group[1]}")
    return out, missing


def published(ctx: Context) -> dict:
    """task -> [(label, throughput / baseline's, accuracy)] of the paper's Table 6 and Table 4."""
    out: dict = {}
    base_col = PAPER6.get(ctx.baseline)
    if base_col is None:
        return out
    for c in paper.TABLE6:
        for task in paper.TABLE6_TASKS:
            p = PAPER4.get(c.attention)
            if p and p.accuracy.get(task) is not None:
                out.setdefault(task, []).append((c.attention, c.throughput[task] / base_col.throughput[task],
                                                 p.accuracy[task]))
    return out


def section(ctx: Context) -> list[str]:
    found = groups(ctx)
    group = found[0] if found else None
    points, missing = ours(ctx, group, accuracy_means(ctx))
    why_empty = "; ".join(missing) or f"no training records and no published {ctx.baseline} baseline"
    ctx.figures[FIGURE] = accuracy_figure(ctx.tasks, points, published(ctx), ctx.baseline,
                                          f"{group[1]}, {group[2]}" if group else None, ctx.primary, why_empty)
    n_ours = sum(len(v) for v in points.values())
    text = (f"![accuracy against training throughput]({FIGURE})\n\n"
            f"Accuracy against training throughput relative to {ctx.baseline} on the same device "
            f"(the paper's T unit is not stated, so only ratios compare). Filled: ours "
            f"({n_ours} point{'s' * (n_ours != 1)}: {ctx.primary or 'no'} preset accuracy, "
            f"{'throughput on ' + group[1] if group else 'no bench records'}); hollow: published "
            f"(PolaFormer Table 4 accuracy, Table 6 throughput).")
    if missing:
        text += " Not drawn: " + "; ".join(missing) + "."
    return ["## Accuracy against throughput", "", text, ""]
