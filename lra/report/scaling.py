"""The scaling section: training step time and peak memory against sequence length, per setting
(device, dtype, task, batch, model), with the fitted log-log slopes and a figure per setting."""

from __future__ import annotations

import json

from lra.core.identity import normalise
from lra.report.context import Context
from lra.report.figures import scaling_figure
from lra.report.runs import describe_bench, describe_env, length_label, md_table, num, task_label
from lra.scaling import fit_slope

INTRO = ("`lra bench --scaling`: the training step of the paper model at a fixed batch; slope = "
         "least-squares slope of log(value) against log(length) over the longest measured lengths "
         "(about 2 for quadratic attention, about 1 for linear). \"skipped\": over the sweep's time or "
         "memory budget (the reason is listed).")


def section(ctx: Context) -> list[str]:
    out = ["## Scaling: time and memory against sequence length", "", INTRO, ""]
    sets = scaling_sets(ctx)
    if not sets:
        return out + ["No scaling sweep recorded yet (`lra bench --scaling --attention ...`)."]
    used_names: dict = {}
    for setting, per_label in sets:
        device = setting[0]
        base = f"scaling-{device}"
        used_names[base] = used_names.get(base, 0) + 1
        fig_name = base + (f"-{used_names[base]}" if used_names[base] > 1 else "") + ".png"
        out += setting_tables(ctx, setting, per_label, fig_name)
    return out


def scaling_sets(ctx: Context) -> list[tuple[tuple, dict]]:
    """[(setting, {label: (points {length: Run}, sweep info)})], a setting being device, dtype,
    task, batch and model; per attention the latest sweep counts."""
    settings: dict = {}
    for r in ctx.of_kind("scaling"):
        s = r.rec.get("scaling", {})
        setting = r.device_group + (r.rec["task"], s.get("batch_size"), json.dumps(normalise(r.cfg.get("model")), sort_keys=True))
        settings.setdefault(setting, {}).setdefault(r.label, {}).setdefault(s.get("sweep_id"), []).append(r)
    out = []
    for setting in sorted(settings, key=lambda s: (s[0] != "cuda",) + tuple(str(x) for x in s)):
        per_label = {}
        for label, sweeps in settings[setting].items():
            sweep = max(sweeps.values(), key=lambda rs: max(r.order for r in rs))
            points = {r.rec["bench"]["seq_len"]: r for r in sorted(sweep, key=lambda r: r.order)}
            info = dict(max(sweep, key=lambda r: r.rec["bench"]["seq_len"]).rec.get("scaling", {}))
            per_label[label] = (points, info)
        out.append((setting, per_label))
    return out


def cell(r, n: int, skipped: set) -> tuple[str, str]:
    """The (time, memory) cells of one length."""
    if r is not None and r.rec["status"] == "ok":
        return num(r.metric("train_step_seconds") * 1000, ".1f"), num(r.metric("peak_memory_mb"), ".0f")
    if r is not None:
        return r.rec["status"], r.rec["status"]
    return ("skipped", "skipped") if n in skipped else ("-", "-")


def setting_tables(ctx: Context, setting: tuple, per_label: dict, fig_name: str) -> list[str]:
    device, device_name, dtype, task, batch, _ = setting
    lengths = sorted({n for pts, info in per_label.values() for n in list(pts) + (info.get("lengths") or [])})
    order = ctx.attention_rows([])
    time_rows, mem_rows, notes, curves = [], [], [], {}
    for label in sorted(per_label, key=lambda l: (order.index(l) if l in order else 999, l)):
        pts, info = per_label[label]
        ok = [(n, r) for n, r in sorted(pts.items()) if r.rec["status"] == "ok"]
        fit = ok[-(info.get("fit_points") or 4):]
        ts = fit_slope([n for n, _ in fit], [r.metric("train_step_seconds") for _, r in fit])
        ms = fit_slope([n for n, _ in fit], [r.metric("peak_memory_mb") for _, r in fit])
        runs = sorted(pts.values(), key=lambda r: r.rec["bench"]["seq_len"])
        ref = ctx.sources.add(
            f"scaling ({device_name}, {dtype}), {label} on {task_label(task)} at batch {batch}: sweep "
            f"`{info.get('sweep_id')}`, runs " + ", ".join(f"`{r.id}`" for r in runs)
            + f"; {describe_env(runs[0])}; {describe_bench(runs[0])}; records under runs/"
            + (f"; slope fitted on lengths {fit[0][0]}..{fit[-1][0]}" if len(fit) > 1 else ""))
        skipped = set(info.get("skipped_lengths") or [])
        cells = [cell(pts.get(n), n, skipped) for n in lengths]
        time_rows.append([f"{label} {ref}"] + [c[0] for c in cells] + [num(ts, ".2f")])
        mem_rows.append([label] + [c[1] for c in cells] + [num(ms, ".2f")])
        if info.get("stop_reason"):
            notes.append(f"- {label}: stopped: {info['stop_reason']}"
                         + (f"; not measured: {', '.join(map(str, sorted(skipped)))}" if skipped else ""))
        curves[label] = ([n for n, _ in ok], [r.metric("train_step_seconds") * 1000 for _, r in ok],
                         [r.metric("peak_memory_mb") for _, r in ok], ts, ms)
    heads = [length_label(n) if n >= 1024 else str(n) for n in lengths]
    parts = [f"### {device_name}, {dtype}: {task_label(task)} model, batch {batch}\n",
             "Training step time (forward + backward + optimiser step), ms:\n",
             md_table(["attention"] + heads + ["slope"], time_rows),
             "\nTraining peak memory, MiB:\n",
             md_table(["attention"] + heads + ["slope"], mem_rows)]
    if notes:
        parts.append("\n" + "\n".join(notes))
    parts.append(f"\n![time and memory against length, log-log]({fig_name})\n")
    ctx.figures[fig_name] = scaling_figure(curves, f"{device_name}, {dtype}, batch {batch}")
    return parts
