"""`lra report`: the Table 4 and Table 6 style leaderboards, from the result records.

    lra report                                   results/runs/*.json -> results/LEADERBOARD.md + PNGs
    lra report --results-dir R --out R/board.md  elsewhere
    lra report --check                           exit 1 if the file on disk is not what would be generated

What goes in (every record under <results-dir>/runs/):
- training records (`kind` "train", from `lra train` / `run_lra.py`): accuracy. Table 4 has one
  block per preset (paper, quick, smoke); per (attention, task) the mean +- sample std over seeds
  of the latest ok run of each seed. Runs that ended "oom", "diverged" or "failed" are shown as
  such and never averaged in.
- bench records (`kind` "bench", from `lra bench`) at the task's paper length with the paper model:
  training throughput T (samples/s) and training peak memory M (MiB) for Table 6, one table per
  device and precision; the latest record of each cell counts.
- scaling records (`kind` "scaling", from `lra bench --scaling`): time and memory against length,
  with the fitted log-log slopes, and the scaling figure.

Rows are attentions by what they compute: a record is shown under the registered name with the
same class and options (a run of `pola` with alpha=5 is a `pola-a5` run); runs with other options
get their own row. Every registered attention gets a row, "no run" where nothing was recorded.
Published numbers (lra.paper_numbers) sit beside ours, labelled as published, never averaged in.
Every number cites a source [S#] that lists its run ids, device and configuration.

The output is a pure function of the records and the registry (no clock, sorted everywhere), so a
test can prove that the committed leaderboard is exactly what this command generates.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lra import paper_numbers as paper
from lra.atomic import atomic_write, atomic_write_text

PRESET_ORDER = ("paper", "quick", "smoke")
PUBLISHED = "published"


# --- records -------------------------------------------------------------------------------------


def _norm(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))



class Labeler:
    """Row label of a run: the registered name computing the same thing, else name (options)."""

    def __init__(self):
        from lra.grid import attention_key, canonical_names

        self.canonical = canonical_names()
        self.by_key = {attention_key(n): c for n, c in self.canonical.items()}

    def registered(self) -> list[str]:
        return sorted(set(self.canonical.values()))

    def __call__(self, name: str, options: dict | None) -> str:
        import attentions
        from lra.errors import ConfigError
        from lra.grid import attention_key

        options = _norm(options or {})
        # every value of `impl` computes the same function (the tests hold each path to its
        # reference), so which implementation ran never splits a row
        options.pop("impl", None)
        try:
            key = attention_key(name, options)
        except ConfigError:  # not registered here, or its options changed since
            return name + (f" ({_options_text(options)})" if options else "")
        if key in self.by_key:
            return self.by_key[key]
        defaults = _norm(attentions.options_dict(attentions.resolve(name)))
        diff = {k: v for k, v in options.items() if defaults.get(k) != v}
        return f"{name} ({_options_text(diff)})" if diff else name


def _options_text(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))


@dataclass
class Run:
    """One record, flattened for the tables."""

    rec: dict
    label: str
    kind: str

    @property
    def id(self) -> str:
        return self.rec["run_id"]

    @property
    def order(self) -> tuple:  # newest last
        return (self.rec.get("created_at") or "", self.rec["run_id"])

    def metric(self, key):
        return (self.rec.get("metrics") or {}).get(key)

    @property
    def env(self) -> dict:
        return self.rec.get("env") or {}

    @property
    def cfg(self) -> dict:
        return self.rec.get("config") or {}

    @property
    def device_group(self) -> tuple[str, str, str]:
        e = self.env
        return (e.get("device") or "?", e.get("device_name") or "?", e.get("dtype") or "?")

    @property
    def rel(self) -> str:
        return "runs/" + Path(self.rec.get("_path", self.id + ".json")).name


def load_runs(records: list[dict], labeler: Labeler) -> list[Run]:
    runs = [Run(r, labeler(r["attention"], r.get("attention_options")), r.get("kind") or "train") for r in records]
    return sorted(runs, key=lambda r: r.order)


def latest(runs: list[Run]) -> Run | None:
    return max(runs, key=lambda r: r.order) if runs else None


# --- formatting ----------------------------------------------------------------------------------


def num(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def task_label(task: str) -> str:
    return paper.TASK_LABELS.get(task, task)


def length_label(n: int | None) -> str:
    if not n:
        return "?"
    return f"{n // 1024}k" if n % 1024 == 0 else str(n)


def short_sha(sha: str | None) -> str:
    if not sha:
        return "?"
    dirty = sha.endswith("+dirty")
    return sha[:10] + ("+dirty" if dirty else "")


def md_table(headers: list[str], rows: list[list], align: list[str] | None = None) -> str:
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


class Sources:
    """Numbered source notes: every figure in the tables cites one."""

    def __init__(self):
        self.entries: list[str] = []

    def add(self, text: str) -> str:
        self.entries.append(text)
        return f"[S{len(self.entries)}]"


def describe_env(run: Run) -> str:
    e = run.env
    return f"{e.get('device_name', '?')}, {e.get('dtype', '?')}, torch {e.get('torch', '?')}, git {short_sha(e.get('git_sha'))}"


def describe_train(run: Run) -> str:
    c, t, d, m = run.cfg, run.cfg.get("train", {}), run.cfg.get("data", {}), run.cfg.get("model", {})
    parts = [f"preset {run.rec.get('preset')}", f"{run.rec.get('steps')} steps", f"batch {t.get('batch_size')}",
             f"lr {t.get('lr')}", f"length {d.get('seq_len')}", f"model {_model_text(m)}"]
    if run.rec.get("num_params"):
        parts.append(f"{run.rec['num_params']:,} params")
    if c.get("attention_options"):
        parts.append(f"options {_options_text(c['attention_options'])}")
    return ", ".join(parts)


def _model_text(m: dict) -> str:
    return f"dim {m.get('dim')}, {m.get('layers')} layers, {m.get('heads')} heads, ffn {m.get('ffn_dim')}" + (
        ", grad checkpoint" if m.get("grad_checkpoint") else "")


def describe_bench(run: Run) -> str:
    b, t = run.rec.get("bench", {}), run.cfg.get("train", {})
    phases = b.get("phases", {})
    steps = "; ".join(f"{p}: {v.get('warmup_steps')} warm-up + {v.get('timed_steps')} timed steps"
                      + (f", load {v.get('load_average')}" if v.get("load_average") is not None else "")
                      for p, v in sorted(phases.items()))
    reason = b.get("batch_reason") or ""
    text = (f"batch {b.get('batch_size')} (paper {b.get('paper_batch_size')}; {reason}), length {b.get('seq_len')}, "
            f"model {_model_text(run.cfg.get('model', {}))}, precision {t.get('precision')}"
            f"{', compiled' if t.get('compile') else ''}; {steps}")
    if run.rec.get("num_params"):
        text += f"; {run.rec['num_params']:,} params"
    if run.metric("peak_memory_method"):
        text += f"; memory: {run.metric('peak_memory_method')}"
    return text


# --- the paper's numbers, by our names ------------------------------------------------------------

# The paper's Table 6 columns and Table 4 rows by our attention name (the published numbers are constants).
PAPER6 = {c.attention: c for c in paper.TABLE6}
PAPER4 = {r.attention: r for r in paper.TABLE4 if r.attention}


def _published6(label: str, task: str, what: str) -> str:
    """The paper's A (from its Table 4), T or M cell for an attention and a task; "-" if none."""
    if what == "A":
        p = PAPER4.get(label)
        return num(p.accuracy.get(task), ".2f") if p and p.accuracy.get(task) is not None else "-"
    c = PAPER6.get(label)
    if c is None:
        return "-"
    v = (c.throughput if what == "T" else c.memory).get(task)
    return num(v, ".2f" if what == "T" else ".0f") if v is not None else "-"


def _published6_average(label: str, base: str, what: str) -> str:
    """The paper's average row: accuracy difference to the baseline, T and M ratios as printed."""
    if what == "A":
        p, b = PAPER4.get(label), PAPER4.get(base)
        return f"{p.average - b.average:+.2f}" if p and b and p.average is not None else "-"
    c = PAPER6.get(label)
    if c is None:
        return "-"
    return f"x{c.throughput_ratio if what == 'T' else c.memory_ratio:.2f}"


def _coverage(n: int, total: int) -> str:
    """Says over how many tasks an average was taken, when not over all of them."""
    return "" if n == total else f" ({n} task{'s' * (n > 1)})"


# --- the report ----------------------------------------------------------------------------------


@dataclass
class Report:
    markdown: str
    figures: dict = field(default_factory=dict)  # file name -> function(path) that draws it


class Builder:
    def __init__(self, records: list[dict], baseline: str | None = None):
        import tasks

        self.labeler = Labeler()
        self.runs = load_runs(records, self.labeler)
        self.sources = Sources()
        self.baseline = baseline or next(c.attention for c in paper.TABLE6 if c.throughput_ratio == 1.0)
        self.baseline = self.labeler(self.baseline, None) if self.baseline in self.labeler.canonical else self.baseline
        recorded_tasks = {r.rec["task"] for r in self.runs}
        extra = sorted((set(tasks.available()) | recorded_tasks) - set(paper.TASKS))
        self.tasks = list(paper.TASKS) + extra
        self.train = [r for r in self.runs if r.kind == "train"]
        self.bench = [r for r in self.runs if r.kind == "bench"]
        self.scaling = [r for r in self.runs if r.kind == "scaling"]
        presets = {r.rec.get("preset") for r in self.train}
        self.presets = [p for p in PRESET_ORDER if p in presets] + sorted(presets - set(PRESET_ORDER))
        self.primary = self.presets[0] if self.presets else None
        self.figures: dict = {}

    # rows: every registered attention (aliases folded) and every recorded label, published order first
    def attention_rows(self, runs: list[Run]) -> list[str]:
        labels = set(self.labeler.registered()) | {r.label for r in runs}
        published = [r.attention for r in paper.TABLE4 if r.attention] + [c.attention for c in paper.TABLE6]
        order = {name: i for i, name in reversed(list(enumerate(published)))}
        return sorted(labels, key=lambda l: (order.get(l, len(order)), l))

    # --- Table 4 ---------------------------------------------------------------------------------

    def accuracy_cell(self, runs: list[Run], where: str) -> tuple[str, float | None]:
        """(cell text, mean) for the training runs of one (attention, task) in one preset."""
        if not runs:
            return "no run", None
        per_seed: dict = {}
        for r in runs:
            per_seed.setdefault(r.rec.get("seed"), []).append(r)
        chosen = []
        for seed in sorted(per_seed, key=str):
            rs = per_seed[seed]
            ok = [r for r in rs if r.rec.get("status") == "ok" and r.metric("test_accuracy") is not None]
            chosen.append(latest(ok) if ok else latest(rs))
        good = [r for r in chosen if r.rec.get("status") == "ok" and r.metric("test_accuracy") is not None]
        bad: dict[str, int] = {}
        for r in chosen:
            if r not in good:
                bad[r.rec.get("status", "failed")] = bad.get(r.rec.get("status", "failed"), 0) + 1
        bad_text = ", ".join(f"{n} {s}" for s, n in sorted(bad.items()))
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
        ref = self.sources.add(f"{where}: " + "; ".join(lines))
        if not good:
            return f"{bad_text} {ref}", None
        import pandas as pd

        acc = pd.Series([r.metric("test_accuracy") for r in good], dtype=float)
        mean = float(acc.mean())
        text = f"{mean:.2f}"
        if len(acc) > 1:
            text += f" ± {float(acc.std(ddof=1)):.2f}"
        text += f" (n={len(acc)}{'; ' + bad_text if bad_text else ''})"
        return f"{text} {ref}", mean

    def table4(self, preset: str | None) -> str:
        runs = [r for r in self.train if r.rec.get("preset") == preset]
        rows_out, ours_means, pub_rows = [], {}, []
        grid = {}
        for label in self.attention_rows(runs):
            cells, means = [], []
            for task in self.tasks:
                cell_runs = [r for r in runs if r.label == label and r.rec["task"] == task]
                text, mean = self.accuracy_cell(cell_runs, f"Table 4 ({preset} preset), {label} / {task_label(task)}") \
                    if cell_runs else ("no run", None)
                cells.append(text)
                means.append(mean)
            five = [m for t, m in zip(self.tasks, means) if t in paper.TASKS]
            avg = sum(five) / len(five) if all(m is not None for m in five) else None
            n_five = sum(m is not None for m in five)
            avg_text = num(avg, ".2f") if avg is not None else ("no run" if n_five == 0 else f"needs all 5 ({n_five}/5)")
            grid[label] = (cells, means, avg, avg_text)
        published = PAPER4
        # best per column, ours and published separately
        best_ours = []
        for j in range(len(self.tasks) + 1):
            vals = [(g[1][j] if j < len(self.tasks) else g[2]) for g in grid.values()]
            vals = [v for v in vals if v is not None]
            best_ours.append(max(vals) if vals else None)
        best_pub = []
        for j, task in enumerate(self.tasks + ["avg"]):
            vals = [(r.average if task == "avg" else r.accuracy.get(task)) for r in paper.TABLE4]
            vals = [v for v in vals if v is not None]
            best_pub.append(max(vals) if vals else None)

        def bold(text, value, best):
            if value is None or best is None or value != best:
                return text
            head, sep, tail = text.partition(" [S")
            return f"**{head}**" + (sep + tail if sep else "")

        source = f"ours ({preset})" if preset else "ours"
        for label, (cells, means, avg, avg_text) in grid.items():
            row = [label, source] + [bold(c, m, best_ours[j]) for j, (c, m) in enumerate(zip(cells, means))]
            row.append(bold(avg_text, avg, best_ours[-1]))
            rows_out.append(row)
            pub = published.get(label)
            if pub is not None:
                rows_out.append(self._published4(pub, best_pub))
        shown = set(grid)
        for pub in paper.TABLE4:
            if pub.attention not in shown:
                pub_rows.append(self._published4(pub, best_pub, standalone=True))
        headers = ["attention", "source"] + [task_label(t) for t in self.tasks] + ["Avg (5 tasks)"]
        return md_table(headers, rows_out + pub_rows)

    def _published4(self, pub, best_pub, standalone: bool = False) -> list[str]:
        cells = []
        for j, task in enumerate(self.tasks):
            v = pub.accuracy.get(task)
            text = num(v, ".2f") if v is not None else "-"
            cells.append(f"**{text}**" if v is not None and v == best_pub[j] else text)
        avg = num(pub.average, ".2f")
        avg = f"**{avg}**" if pub.average == best_pub[-1] else avg
        name = pub.label + (" (not in this suite)" if standalone and pub.attention is None else "")
        marks = " (note)" if pub.note and pub.note != "average only" else ""
        return [name if standalone else f"↳ {name}", f"{PUBLISHED}{marks}"] + cells + [avg]

    # --- Table 6 ---------------------------------------------------------------------------------

    def paper_shape(self, r: Run) -> bool:
        """A Table 6 measurement: the training step measured, at the task's paper length, paper model."""
        from dataclasses import asdict

        from lra.config import ModelConfig

        b = r.rec.get("bench", {})
        return (b.get("seq_len") == b.get("paper_seq_len") and "train" in (b.get("phases") or {})
                and _norm(r.cfg.get("model")) == _norm(asdict(ModelConfig())))

    def accuracy_means(self) -> dict:
        """(label, task) -> mean accuracy of the primary preset (for Table 6's A rows)."""
        out = {}
        for r in self.train:
            if r.rec.get("preset") != self.primary:
                continue
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

    def table6_groups(self) -> list[tuple]:
        groups = sorted({r.device_group for r in self.bench if self.paper_shape(r)},
                        key=lambda g: (g[0] != "cuda", g[1], g[2]))
        return groups

    def table6(self, group: tuple | None) -> str:
        runs = [r for r in self.bench if group is not None and r.device_group == group and self.paper_shape(r)]
        labels = self.attention_rows(runs)
        labels += [c.attention for c in paper.TABLE6 if c.attention not in labels]  # the paper's columns, always
        tasks_here = list(paper.TABLE6_TASKS) + sorted({r.rec["task"] for r in runs} - set(paper.TABLE6_TASKS))
        cell: dict = {}
        for task in tasks_here:
            for label in labels:
                found = latest([r for r in runs if r.label == label and r.rec["task"] == task])
                if found is not None:
                    cell[(label, task)] = found
        acc = self.accuracy_means()
        rows = []
        for task in tasks_here:
            rows += self._table6_task(group, task, labels, cell, acc)
        rows += self._table6_average(tasks_here, labels, cell, acc)
        cols = PAPER6
        headers = ["task", "", "source"] + [l + (f" (paper: {cols[l].label})" if l in cols and cols[l].label.lower() != l else "")
                                            for l in labels]
        return md_table(headers, rows)

    def _table6_task(self, group, task, labels, cell, acc) -> list[list[str]]:
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
                refs[l] = self.sources.add(
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
            [head, "A", f"ours ({self.primary or 'no'} preset)"]
            + [num(acc.get((l, task)), ".2f") if (l, task) in acc else "no run" for l in labels],
            ["", "A", PUBLISHED] + [_published6(l, task, "A") for l in labels],
            ["", "T", "ours"] + [ours(l, "train_throughput", ".1f") for l in labels],
            ["", "T", PUBLISHED] + [_published6(l, task, "T") for l in labels],
            ["", "M", "ours"] + [ours(l, "peak_memory_mb", ".0f") for l in labels],
            ["", "M", PUBLISHED] + [_published6(l, task, "M") for l in labels],
        ]

    def _table6_average(self, tasks_here, labels, cell, acc) -> list[list[str]]:
        """The average rows against the baseline: the accuracy difference, and T and M as a ratio of
        means over the tasks both have (the paper's own average row is the ratio of its per-task
        means: 2642.49 / 2198.45 = 1.20)."""
        base = self.baseline

        def ratio(l, metric):
            pairs = [(cell[(l, t)].metric(metric), cell[(base, t)].metric(metric)) for t in tasks_here
                     if (l, t) in cell and (base, t) in cell]
            pairs = [(a, b) for a, b in pairs if a is not None and b]
            if not pairs:
                return "-"
            value = sum(a for a, _ in pairs) / sum(b for _, b in pairs)
            return f"x{value:.2f}" + _coverage(len(pairs), len(tasks_here))

        def delta(l):
            pairs = [(acc[(l, t)], acc[(base, t)]) for t in tasks_here if (l, t) in acc and (base, t) in acc]
            if not pairs:
                return "-"
            return f"{sum(a - b for a, b in pairs) / len(pairs):+.2f}" + _coverage(len(pairs), len(tasks_here))

        return [
            [f"Avg (vs {base})", "A", "ours (mean difference)"] + [delta(l) for l in labels],
            ["", "A", PUBLISHED] + [_published6_average(l, base, "A") for l in labels],
            ["", "T", "ours (ratio)"] + [ratio(l, "train_throughput") for l in labels],
            ["", "T", PUBLISHED] + [_published6_average(l, base, "T") for l in labels],
            ["", "M", "ours (ratio)"] + [ratio(l, "peak_memory_mb") for l in labels],
            ["", "M", PUBLISHED] + [_published6_average(l, base, "M") for l in labels],
        ]

    def bench_details(self) -> str:
        """Every bench record that counts (latest per cell), including the ones off the paper shape."""
        from lra.bench import cell_key

        latest_by_cell: dict = {}
        for r in self.bench:
            key = r.rec.get("bench", {}).get("key") or cell_key(r.rec)
            if key not in latest_by_cell or r.order > latest_by_cell[key].order:
                latest_by_cell[key] = r
        rows = []
        for r in sorted(latest_by_cell.values(), key=lambda r: (r.device_group, self.tasks.index(r.rec["task"])
                                                                 if r.rec["task"] in self.tasks else 99, r.label)):
            b = r.rec.get("bench", {})
            tr = (b.get("phases", {}).get("train") or {})
            rows.append([r.env.get("device", "?"), r.rec["task"], r.label, f"{b.get('batch_size')} ({b.get('paper_batch_size')})",
                         b.get("seq_len"), r.rec["status"], num(r.metric("train_throughput"), ".1f"),
                         num(r.metric("eval_throughput"), ".1f"), num(r.metric("peak_memory_mb"), ".0f"),
                         num(r.metric("eval_peak_memory_mb"), ".0f"),
                         num(tr.get("median_step_seconds") and tr["median_step_seconds"] * 1000, ".1f"),
                         num(tr.get("load_average"), ".2f"), f"{r.rec.get('num_params', '-'):,}"
                         if r.rec.get("num_params") else "-", f"`{r.id}`"])
        superseded = len(self.bench) - len(latest_by_cell)
        note = (f"\n\n{superseded} older bench record(s) of the same cells are superseded by these and not shown."
                if superseded else "")
        if not rows:
            return "No bench records yet." + note
        return md_table(["device", "task", "attention", "batch (paper)", "length", "status", "train samples/s",
                         "eval samples/s", "train MiB", "eval MiB", "median train step ms", "load avg",
                         "params", "run"], rows) + note

    # --- scaling -----------------------------------------------------------------------------------

    def scaling_sets(self) -> list[tuple[tuple, dict]]:
        """[(setting, {label: (points {length: Run}, sweep info)})], a setting being device, dtype,
        task, batch and model; per attention the latest sweep counts."""
        settings: dict = {}
        for r in self.scaling:
            s = r.rec.get("scaling", {})
            setting = r.device_group + (r.rec["task"], s.get("batch_size"), json.dumps(_norm(r.cfg.get("model")), sort_keys=True))
            settings.setdefault(setting, {}).setdefault(r.label, {}).setdefault(s.get("sweep_id"), []).append(r)
        out = []
        for setting in sorted(settings, key=lambda s: (s[0] != "cuda",) + tuple(str(x) for x in s)):
            per_label = {}
            for label, sweeps in settings[setting].items():
                sweep = max(sweeps.values(), key=lambda rs: max(r.order for r in rs))
                points: dict = {}
                for r in sorted(sweep, key=lambda r: r.order):
                    points[r.rec["bench"]["seq_len"]] = r
                info = dict(max(sweep, key=lambda r: r.rec["bench"]["seq_len"]).rec.get("scaling", {}))
                per_label[label] = (points, info)
            out.append((setting, per_label))
        return out

    def scaling_section(self) -> list[str]:
        from lra.bench import fit_slope

        sets = self.scaling_sets()
        if not sets:
            return ["No scaling sweep recorded yet (`lra bench --scaling --attention ...`)."]
        parts = []
        used_names: dict = {}
        for setting, per_label in sets:
            device, device_name, dtype, task, batch, _ = setting
            base = f"scaling-{device}"
            used_names[base] = used_names.get(base, 0) + 1
            fig_name = base + (f"-{used_names[base]}" if used_names[base] > 1 else "") + ".png"
            lengths = sorted({n for pts, info in per_label.values() for n in list(pts) + (info.get("lengths") or [])})
            time_rows, mem_rows, notes, curves = [], [], [], {}
            for label in sorted(per_label, key=lambda l: (self.attention_rows([]).index(l)
                                                          if l in self.attention_rows([]) else 999, l)):
                pts, info = per_label[label]
                ok = [(n, r) for n, r in sorted(pts.items()) if r.rec["status"] == "ok"]
                fit_n = info.get("fit_points") or 4
                fit = ok[-fit_n:]
                ts = fit_slope([n for n, _ in fit], [r.metric("train_step_seconds") for _, r in fit])
                ms = fit_slope([n for n, _ in fit], [r.metric("peak_memory_mb") for _, r in fit])
                runs = sorted(pts.values(), key=lambda r: r.rec["bench"]["seq_len"])
                ref = self.sources.add(
                    f"scaling ({device_name}, {dtype}), {label} on {task_label(task)} at batch {batch}: sweep "
                    f"`{info.get('sweep_id')}`, runs " + ", ".join(f"`{r.id}`" for r in runs)
                    + f"; {describe_env(runs[0])}; {describe_bench(runs[0])}; records under runs/"
                    + (f"; slope fitted on lengths {fit[0][0]}..{fit[-1][0]}" if len(fit) > 1 else ""))
                trow, mrow = [f"{label} {ref}"], [label]
                skipped = set(info.get("skipped_lengths") or [])
                for n in lengths:
                    r = pts.get(n)
                    if r is not None and r.rec["status"] == "ok":
                        trow.append(num(r.metric("train_step_seconds") * 1000, ".1f"))
                        mrow.append(num(r.metric("peak_memory_mb"), ".0f"))
                    elif r is not None:
                        trow.append(r.rec["status"])
                        mrow.append(r.rec["status"])
                    elif n in skipped:
                        trow.append("skipped")
                        mrow.append("skipped")
                    else:
                        trow.append("-")
                        mrow.append("-")
                trow.append(num(ts, ".2f"))
                mrow.append(num(ms, ".2f"))
                time_rows.append(trow)
                mem_rows.append(mrow)
                if info.get("stop_reason"):
                    notes.append(f"- {label}: stopped: {info['stop_reason']}"
                                 + (f"; not measured: {', '.join(map(str, sorted(skipped)))}" if skipped else ""))
                curves[label] = ([n for n, _ in ok], [r.metric("train_step_seconds") * 1000 for _, r in ok],
                                 [r.metric("peak_memory_mb") for _, r in ok], ts, ms)
            heads = [length_label(n) if n >= 1024 else str(n) for n in lengths]
            parts.append(f"### {device_name}, {dtype}: {task_label(task)} model, batch {batch}\n")
            parts.append("Training step time (forward + backward + optimiser step), ms:\n")
            parts.append(md_table(["attention"] + heads + ["slope"], time_rows))
            parts.append("\nTraining peak memory, MiB:\n")
            parts.append(md_table(["attention"] + heads + ["slope"], mem_rows))
            if notes:
                parts.append("\n" + "\n".join(notes))
            parts.append(f"\n![time and memory against length, log-log]({fig_name})\n")
            self.figures[fig_name] = _scaling_figure(curves, f"{device_name}, {dtype}, batch {batch}")
        return parts

    # --- accuracy vs throughput ---------------------------------------------------------------------

    def accuracy_throughput_figure(self) -> str:
        groups = self.table6_groups()
        group = groups[0] if groups else None
        acc = self.accuracy_means()
        ours: dict = {}
        if group is not None:
            runs = [r for r in self.bench if r.device_group == group and self.paper_shape(r)]
            for task in self.tasks:
                base = latest([r for r in runs if r.label == self.baseline and r.rec["task"] == task])
                if base is None or not base.metric("train_throughput"):
                    continue
                for label in sorted({r.label for r in runs}):  # a fixed drawing order: a reproducible PNG
                    r = latest([x for x in runs if x.label == label and x.rec["task"] == task])
                    if r and r.metric("train_throughput") and (label, task) in acc:
                        ours.setdefault(task, []).append((label, r.metric("train_throughput") /
                                                          base.metric("train_throughput"), acc[(label, task)]))
        published: dict = {}
        base_col = PAPER6.get(self.baseline)
        if base_col is not None:
            for c in paper.TABLE6:
                for task in paper.TABLE6_TASKS:
                    p = PAPER4.get(c.attention)
                    if p and p.accuracy.get(task) is not None:
                        published.setdefault(task, []).append((c.attention, c.throughput[task] / base_col.throughput[task],
                                                               p.accuracy[task]))
        name = "accuracy-throughput.png"
        self.figures[name] = _accuracy_figure(self.tasks, ours, published, self.baseline,
                                              f"{group[1]}, {group[2]}" if group else None, self.primary)
        n_ours = sum(len(v) for v in ours.values())
        return (f"![accuracy against training throughput]({name})\n\n"
                f"Accuracy against training throughput relative to {self.baseline} on the same device "
                f"(the paper's T unit is not stated, so only ratios compare). Filled: ours "
                f"({n_ours} point{'s' * (n_ours != 1)}: {self.primary or 'no'} preset accuracy, "
                f"{'throughput on ' + group[1] if group else 'no bench records'}); hollow: published "
                f"(PolaFormer Table 4 accuracy, Table 6 throughput).")

    # --- the whole document ----------------------------------------------------------------------------

    def build(self) -> Report:
        counts: dict = {}
        for r in self.runs:
            counts.setdefault(r.kind, {}).setdefault(r.rec.get("status"), 0)
            counts[r.kind][r.rec.get("status")] += 1
        count_text = "; ".join(f"{kind}: " + ", ".join(f"{n} {s}" for s, n in sorted(v.items()))
                               for kind, v in sorted(counts.items())) or "none"
        out = [
            "# LRA leaderboard",
            "",
            "Generated by `lra report` from the result records under `runs/` in this folder "
            f"({len(self.runs)} records; {count_text}). Do not edit by hand: "
            "`tests/test_report_committed.py` checks that this file is exactly what `lra report` generates from "
            "the committed records. Published numbers are from " + paper.SOURCE + ", labelled *published*, and never "
            "averaged with ours. Every figure of ours cites a source [S#] (run ids, device, configuration) at the end.",
            "",
            "Regenerate (the README explains each step):",
            "",
            "    lra bench --task all --attention all --device cpu --skip-existing                # Table 6 T / M",
            "    lra bench --scaling --attention all --device cpu                                 # scaling sweep",
            "    python run_lra.py --task listops --attention all --preset smoke --seeds 0,1,2    # accuracy (smoke)",
            "    python run_lra.py --task pathfinder --attention all --preset smoke --seeds 0     # accuracy (smoke)",
            "    lra report",
            "",
        ]
        out += ["## Table 4 style: accuracy (%)", ""]
        out.append("Mean ± sample standard deviation over seeds (n = seeds; the latest ok run of each seed), best-dev "
                   "checkpoint tested on the whole test split. Best per column in bold, ours and published "
                   "separately. Avg is over the paper's five tasks (Path-X is not in it), shown once all five have "
                   "runs. Runs that ended oom / diverged / failed are counted beside the mean, never averaged in.")
        out.append("")
        for preset in self.presets or [None]:
            if preset == "paper":
                title = "paper preset (the PolaFormer / Skyformer setup: comparable with the published rows)"
            elif preset == "smoke":
                title = ("smoke preset: a pipeline check (about a minute of CPU training on a small generated set), "
                         "NOT comparable with the published rows")
            elif preset == "quick":
                title = "quick preset: a tenth of the paper's steps, not directly comparable with the published rows"
            elif preset is None:
                title = "no training records yet"
            else:
                title = f"{preset} preset"
            out += [f"### {title}", "", self.table4(preset), ""]

        out += ["## Table 6 style: accuracy, throughput and memory", ""]
        out.append(f"Per task: A accuracy % ({self.primary or 'no'} preset), T training throughput (samples/s: "
                   "forward + backward + optimiser step, steady state after warm-up), M training peak memory (MiB: "
                   "CUDA allocated memory after a reset; on CPU the resident memory the measurement added, each "
                   "measurement in a fresh process). Ours are `lra bench` records at the task's paper length with "
                   f"the paper model; the batch is the paper's unless the row says otherwise. Avg: T and M as the "
                   f"ratio of the per-task means to {self.baseline}'s (how the paper's average row is computed), A "
                   f"as the mean accuracy difference to {self.baseline}, over the tasks both have (count shown when "
                   "not all). Published A is the paper's Table 4; published T has no stated unit, so compare ratios, "
                   "not raw T, across machines.")
        out.append("")
        groups = self.table6_groups()
        for group in groups or [None]:
            title = f"{group[1]}, {group[2]}" if group else "no bench records yet"
            out += [f"### {title}", "", self.table6(group), ""]
        out += ["### Every bench record that counts", "", self.bench_details(), ""]
        out += ["## Scaling: time and memory against sequence length", ""]
        out.append("`lra bench --scaling`: the training step of the paper model at a fixed batch; slope = "
                   "least-squares slope of log(value) against log(length) over the longest measured lengths "
                   "(about 2 for quadratic attention, about 1 for linear). \"skipped\": over the sweep's time or "
                   "memory budget (the reason is listed).")
        out.append("")
        out += self.scaling_section()
        out += ["", "## Accuracy against throughput", "", self.accuracy_throughput_figure(), ""]
        out += ["## Sources", ""]
        out += [f"- [S{i}] {text}" for i, text in enumerate(self.sources.entries, 1)] or ["(none)"]
        notes = [f"- {r.label}: {r.note}" for r in paper.TABLE4 if r.note and r.note != "average only"]
        notes += [f"- {c.label} (Table 6): {c.note}" for c in paper.TABLE6 if c.note]
        notes += [f"- {label} (Table 6): {text}" for label, text in sorted(paper.TABLE6_INCONSISTENT.items())]
        out += ["", "Notes on the published numbers:", ""] + notes
        aliases = sorted((n, c) for n, c in self.labeler.canonical.items() if n != c)
        if aliases:
            out += ["", "Names folded into one row (same class, same resolved options): "
                    + ", ".join(f"{n} = {c}" for n, c in aliases) + "."]
        return Report("\n".join(out).rstrip() + "\n", dict(self.figures))


def build_report(records: list[dict], baseline: str | None = None) -> Report:
    return Builder(records, baseline).build()


# --- figures -----------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    """PNG written atomically like the markdown: an interrupted report never leaves a torn figure."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, metadata={"Software": None}))


def _scaling_figure(curves: dict, title: str):
    def draw(path: Path):
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for label, (n, t, m, ts, ms) in curves.items():
            if not n:
                continue
            axes[0].plot(n, t, marker="o", label=f"{label} (slope {num(ts, '.2f')})")
            axes[1].plot(n, m, marker="o", label=f"{label} (slope {num(ms, '.2f')})")
        for ax, ylabel in zip(axes, ("training step, ms", "training peak memory, MiB")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.suptitle(f"Scaling with length ({title})")
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)

    return draw


def _accuracy_figure(task_names, ours: dict, published: dict, baseline: str, device: str | None, preset):
    def draw(path: Path):
        plt = _plt()
        shown = [t for t in task_names if ours.get(t) or published.get(t)]
        cols = min(3, max(1, len(shown)))
        rows = max(1, math.ceil(len(shown) / cols))
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.8 * rows), squeeze=False)
        for ax, task in zip(axes.flat, shown):
            for label, x, y in published.get(task, []):
                ax.scatter([x], [y], facecolors="none", edgecolors="tab:gray", marker="s")
                ax.annotate(label, (x, y), fontsize=7, color="tab:gray", xytext=(3, 3), textcoords="offset points")
            for label, x, y in ours.get(task, []):
                ax.scatter([x], [y], color="tab:blue")
                ax.annotate(label, (x, y), fontsize=7, color="tab:blue", xytext=(3, -9), textcoords="offset points")
            ax.set_title(task_label(task))
            ax.set_xlabel(f"training throughput / {baseline}")
            ax.set_ylabel("accuracy %")
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        fig.suptitle(f"Accuracy vs throughput: filled = ours ({preset or 'no'} preset"
                     f"{', ' + device if device else ''}), hollow = published (PolaFormer)", fontsize=9)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)

    return draw


# --- the command ------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from lra.cli import DEFAULT_RESULTS_DIR

    p = sub.add_parser("report", help="Table 4 / Table 6 leaderboards (markdown + figures) from the records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"where the records are (default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--out", default=None, help="markdown file to write (default <results-dir>/LEADERBOARD.md); "
                                               "figures go beside it")
    p.add_argument("--baseline", default=None, help="attention the ratios are to (default: the paper's, softmax)")
    p.add_argument("--no-figures", action="store_true", help="write the markdown only")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs from what would be "
                                                        "generated")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    from lra.errors import ConfigError
    from lra.results import read_records

    results = Path(args.results_dir)
    if not (results / "runs").is_dir():
        raise ConfigError(f"no records: {results / 'runs'} does not exist. Run `lra train` or `lra bench` with "
                          f"--results-dir {results} first, or point --results-dir at the folder that holds runs/")
    out = Path(args.out) if args.out else results / "LEADERBOARD.md"
    if args.baseline is not None:
        import attentions

        attentions.get(args.baseline)  # unknown names fail with the valid ones
    report = build_report(read_records(results), args.baseline)
    if args.check:
        current = out.read_text() if out.exists() else None
        if current != report.markdown:
            print(f"{out} is not what `lra report` generates from {results / 'runs'}; regenerate it with "
                  f"`lra report --results-dir {results} --out {out}`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        for name, draw in sorted(report.figures.items()):
            draw(out.parent / name)
    atomic_write_text(out, report.markdown)
    if not args.quiet:
        print(report.markdown)
    figs = "" if args.no_figures else f" and {len(report.figures)} figure(s): {', '.join(sorted(report.figures))}"
    print(f"[report] wrote {out}{figs}", file=sys.stderr)
    return 0
