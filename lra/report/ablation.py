"""Ablations: an attention's option variants (`lra train --variants`) beside its default run, per
task and preset, and the paper's published ablations beside ours (lra/core/paper_numbers.py
ABLATIONS: Appendix A.4 on LRA Text; the Table 3 components, measured on ImageNet only)."""

from __future__ import annotations

from lra.core import paper_numbers as paper
from lra.core.identity import normalise
from lra.report.context import PRESET_ORDER, Context
from lra.report.runs import PUBLISHED, Run, md_table, num, options_text, task_label
from lra.report.table4 import accuracy_cell

INTRO = (
    "Each row is one variant of an attention: its options that differ from the attention's defaults "
    "(`lra train --variants ...`, one cell per variant), trained and tested exactly like the default run "
    "(`baseline`) above it. Ours: mean ± sample std over seeds, as in Table 4. Published: the PolaFormer "
    "paper's own ablations, labelled with the task it measured them on. Appendix A.4 measured the five "
    "initialisations of the gate G on LRA Text (alpha 3); Table 3 measured the components (polarity, "
    "gate, convolution, learnable power) on ImageNet-1K only, so those rows have no published LRA number. "
    "Where our task is not the paper's, the two columns do not compare: ours show the direction of an "
    "effect on our task, not the paper's number.")


def published_for(base: str) -> list:
    return [a for a in paper.ABLATIONS if a.attention == base]


def section(ctx: Context) -> list[str]:
    train = ctx.of_kind("train")
    groups = sorted({(v[0], r.rec["task"], r.rec.get("preset")) for r in train if (v := ctx.variant(r))},
                    key=lambda g: (g[0], ctx.tasks.index(g[1]) if g[1] in ctx.tasks else 99,
                                   PRESET_ORDER.index(g[2]) if g[2] in PRESET_ORDER else 99))
    out = ["## Ablations", "", INTRO, ""]
    if not groups:
        return out + ["No variant runs yet: e.g. `lra train --task listops --attention pola-a3 --variants baseline "
                      "gate=false polarity=false dwc=false learnable_power=false gate_init=zeros --seeds 0-2`.", ""]
    for base, task, preset in groups:
        out += [f"### {base} on {task_label(task)}, {preset} preset", "", table(ctx, train, base, task, preset), ""]
    return out


def table(ctx: Context, train: list[Run], base: str, task: str, preset: str) -> str:
    here = [r for r in train if r.rec["task"] == task and r.rec.get("preset") == preset]
    rows: dict = {}  # options text -> (options, runs)
    for r in here:
        if r.label == base:
            rows.setdefault("", ({}, []))[1].append(r)
        elif (v := ctx.variant(r)) and v[0] == base:
            rows.setdefault(options_text(v[1]), (v[1], []))[1].append(r)
    for pub in published_for(base):
        rows.setdefault(options_text(normalise(pub.options)), (normalise(pub.options), []))
    out = []
    for key in sorted(rows, key=lambda k: (k != "", k)):
        options, runs = rows[key]
        where = f"Ablation ({preset} preset), {base} [{key or 'baseline'}] / {task_label(task)}"
        ours = accuracy_cell(ctx, runs, where)[0] if runs else "no run"
        pub = next((p for p in published_for(base) if normalise(p.options) == options), None)
        out.append([key or "baseline (defaults)", pub.label if pub else "-", ours] + published_cells(pub))
    return md_table(["variant (options)", "the paper's name", f"ours: {task_label(task)} ({preset})",
                     PUBLISHED, "published on"], out)


def published_cells(pub) -> list[str]:
    """The paper's accuracy and where it has it ("-" when the paper has no such ablation)."""
    if pub is None:
        return ["-", "-"]
    acc = ", ".join(f"{num(v, '.2f')} ({task_label(t)})" for t, v in sorted(pub.accuracy.items()))
    return [acc or "no LRA number", f"{pub.table}: {pub.measured_on}"]
