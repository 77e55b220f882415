"""Table 4 style: accuracy (%) per attention and task, one block per preset, the paper's rows beside ours."""

from __future__ import annotations

import pandas as pd

from lra.core import paper_numbers as paper
from lra.report.context import Context
from lra.report.runs import PUBLISHED, Run, describe_env, describe_train, latest, md_table, num, params_text, task_label

PAPER4 = {r.attention: r for r in paper.TABLE4 if r.attention}  # the paper's Table 4 rows by our name

INTRO = ("Mean ± sample standard deviation over seeds (n = seeds; the latest ok run of each seed), best-dev "
         "checkpoint tested on the whole test split. Best per column in bold, ours and published "
         "separately. Avg is over the paper's five tasks (Path-X is not in it), shown once all five have "
         "runs. Runs that ended oom / diverged / failed are counted beside the mean, never averaged in. "
         "Params: the trained parameters of the runs' models (their range over the tasks: the embedding "
         "and some attentions grow with the length). Runs of an attention with options changed "
         "(`--variants`) are in the Ablations section, beside its default run.")


def section(ctx: Context) -> list[str]:
    out = ["## Table 4 style: accuracy (%)", "", INTRO, ""]
    for preset in ctx.presets or [None]:
        out += [f"### {title(preset)}", "", table(ctx, preset), ""]
    return out


def title(preset: str | None) -> str:
    if preset == "paper":
        return "paper preset (the PolaFormer / Skyformer setup: comparable with the published rows)"
    if preset == "smoke":
        return ("smoke preset: a pipeline check (about a minute of CPU training on a small generated set), "
                "NOT comparable with the published rows")
    if preset == "quick":
        return "quick preset: a tenth of the paper's steps, not directly comparable with the published rows"
    if preset is None:
        return "no training records yet"
    return f"{preset} preset"


def seed_runs(runs: list[Run]) -> list[Run]:
    """Per seed, the latest ok run (or the latest run when none is ok)."""
    per_seed: dict = {}
    for r in runs:
        per_seed.setdefault(r.rec.get("seed"), []).append(r)
    chosen = []
    for seed in sorted(per_seed, key=str):
        rs = per_seed[seed]
        ok = [r for r in rs if is_good(r)]
        chosen.append(latest(ok) if ok else latest(rs))
    return chosen


def is_good(r: Run) -> bool:
    return r.rec.get("status") == "ok" and r.metric("test_accuracy") is not None


def cite(ctx: Context, chosen: list[Run], where: str) -> str:
    """A source note listing the runs of one cell (their context once, when the seeds share it)."""
    def run_text(r):
        acc = r.metric("test_accuracy")
        return (f"`{r.id}` (seed {r.rec.get('seed')}, {r.rec.get('status')}"
                + (f", {acc:.2f}%" if acc is not None else "") + f"; record {r.rel})")

    contexts = {(describe_env(r), describe_train(r)) for r in chosen}
    if len(contexts) == 1:  # the usual case: the seeds differ in nothing else
        (env, train), = contexts
        lines = [", ".join(run_text(r) for r in chosen) + f"; {env}; {train}"]
    else:
        lines = [f"{run_text(r)}: {describe_env(r)}; {describe_train(r)}" for r in chosen]
    return ctx.sources.add(f"{where}: " + "; ".join(lines))


def accuracy_cell(ctx: Context, runs: list[Run], where: str) -> tuple[str, float | None]:
    """(cell text, mean) for the training runs of one (attention, task) in one preset."""
    if not runs:
        return "no run", None
    chosen = seed_runs(runs)
    good = [r for r in chosen if is_good(r)]
    bad: dict[str, int] = {}
    for r in chosen:
        if r not in good:
            bad[r.rec.get("status", "failed")] = bad.get(r.rec.get("status", "failed"), 0) + 1
    bad_text = ", ".join(f"{n} {s}" for s, n in sorted(bad.items()))
    ref = cite(ctx, chosen, where)
    if not good:
        return f"{bad_text} {ref}", None
    acc = pd.Series([r.metric("test_accuracy") for r in good], dtype=float)
    mean = float(acc.mean())
    text = f"{mean:.2f}"
    if len(acc) > 1:
        text += f" ± {float(acc.std(ddof=1)):.2f}"
    text += f" (n={len(acc)}{'; ' + bad_text if bad_text else ''})"
    return f"{text} {ref}", mean


def bold(text: str, value, best) -> str:
    if value is None or best is None or value != best:
        return text
    head, sep, tail = text.partition(" [S")
    return f"**{head}**" + (sep + tail if sep else "")


def grid(ctx: Context, runs: list[Run], preset: str | None) -> dict:
    """label -> (cell texts, means, five-task average, its text)."""
    out = {}
    for label in ctx.attention_rows(runs):
        cells, means = [], []
        for task in ctx.tasks:
            cell_runs = [r for r in runs if r.label == label and r.rec["task"] == task]
            text, mean = accuracy_cell(ctx, cell_runs, f"Table 4 ({preset} preset), {label} / {task_label(task)}") \
                if cell_runs else ("no run", None)
            cells.append(text)
            means.append(mean)
        five = [m for t, m in zip(ctx.tasks, means) if t in paper.TASKS]
        avg = sum(five) / len(five) if all(m is not None for m in five) else None
        n_five = sum(m is not None for m in five)
        avg_text = num(avg, ".2f") if avg is not None else ("no run" if n_five == 0 else f"needs all 5 ({n_five}/5)")
        out[label] = (cells, means, avg, avg_text)
    return out


def best_per_column(ctx: Context, cells: dict) -> tuple[list, list]:
    """The best value of each task column and of the average, ours and published separately."""
    ours = []
    for j in range(len(ctx.tasks) + 1):
        vals = [(g[1][j] if j < len(ctx.tasks) else g[2]) for g in cells.values()]
        vals = [v for v in vals if v is not None]
        ours.append(max(vals) if vals else None)
    published = []
    for task in ctx.tasks + ["avg"]:
        vals = [(r.average if task == "avg" else r.accuracy.get(task)) for r in paper.TABLE4]
        vals = [v for v in vals if v is not None]
        published.append(max(vals) if vals else None)
    return ours, published


def table(ctx: Context, preset: str | None) -> str:
    runs = [r for r in ctx.of_kind("train") if r.rec.get("preset") == preset]
    cells = grid(ctx, runs, preset)
    best_ours, best_pub = best_per_column(ctx, cells)
    source = f"ours ({preset})" if preset else "ours"
    rows = []
    for label, (texts, means, avg, avg_text) in cells.items():
        row = [label, source] + [bold(c, m, best_ours[j]) for j, (c, m) in enumerate(zip(texts, means))]
        params = params_text(r.rec.get("num_params") for r in runs if r.label == label)
        rows.append(row + [bold(avg_text, avg, best_ours[-1]), params])
        if label in PAPER4:
            rows.append(published_row(ctx, PAPER4[label], best_pub))
    rows += [published_row(ctx, pub, best_pub, standalone=True) for pub in paper.TABLE4 if pub.attention not in cells]
    headers = ["attention", "source"] + [task_label(t) for t in ctx.tasks] + ["Avg (5 tasks)", "params"]
    return md_table(headers, rows)


def published_row(ctx: Context, pub, best_pub, standalone: bool = False) -> list[str]:
    cells = []
    for j, task in enumerate(ctx.tasks):
        v = pub.accuracy.get(task)
        text = num(v, ".2f") if v is not None else "-"
        cells.append(f"**{text}**" if v is not None and v == best_pub[j] else text)
    avg = num(pub.average, ".2f")
    avg = f"**{avg}**" if pub.average == best_pub[-1] else avg
    name = pub.label + (" (not in this suite)" if standalone and pub.attention is None else "")
    marks = " (note)" if pub.note and pub.note != "average only" else ""
    return [name if standalone else f"↳ {name}", f"{PUBLISHED}{marks}"] + cells + [avg, "-"]
