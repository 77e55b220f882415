"""The accuracy-against-throughput figure: ours (accuracy of the primary preset against training
throughput relative to the baseline, on the first Table 6 device) beside the paper's points."""

from __future__ import annotations

from lra.core import paper_numbers as paper
from lra.report.context import Context
from lra.report.figures import accuracy_figure
from lra.report.runs import latest
from lra.report.table4 import PAPER4
from lra.report.table6 import PAPER6, accuracy_means, groups, paper_shape

FIGURE = "accuracy-throughput.png"


def ours(ctx: Context, group: tuple | None, acc: dict) -> dict:
    """task -> [(label, throughput / baseline's, accuracy)] of our runs on `group`."""
    out: dict = {}
    if group is None:
        return out
    runs = [r for r in ctx.of_kind("bench") if r.device_group == group and paper_shape(r)]
    for task in ctx.tasks:
        base = latest([r for r in runs if r.label == ctx.baseline and r.rec["task"] == task])
        if base is None or not base.metric("train_throughput"):
            continue
        for label in sorted({r.label for r in runs}):  # a fixed drawing order: a reproducible PNG
            r = latest([x for x in runs if x.label == label and x.rec["task"] == task])
            if r and r.metric("train_throughput") and (label, task) in acc:
                out.setdefault(task, []).append((label, r.metric("train_throughput") / base.metric("train_throughput"),
                                                 acc[(label, task)]))
    return out


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
    points = ours(ctx, group, accuracy_means(ctx))
    ctx.figures[FIGURE] = accuracy_figure(ctx.tasks, points, published(ctx), ctx.baseline,
                                          f"{group[1]}, {group[2]}" if group else None, ctx.primary)
    n_ours = sum(len(v) for v in points.values())
    text = (f"![accuracy against training throughput]({FIGURE})\n\n"
            f"Accuracy against training throughput relative to {ctx.baseline} on the same device "
            f"(the paper's T unit is not stated, so only ratios compare). Filled: ours "
            f"({n_ours} point{'s' * (n_ours != 1)}: {ctx.primary or 'no'} preset accuracy, "
            f"{'throughput on ' + group[1] if group else 'no bench records'}); hollow: published "
            f"(PolaFormer Table 4 accuracy, Table 6 throughput).")
    return ["## Accuracy against throughput", "", text, ""]
