"""The records a report reads, as rows: each run labelled by what it computes, with the text that
describes where a number came from (every figure in the report cites such a source)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tabulate import tabulate

import attentions
from lra.core import paper_numbers as paper
from lra.core.identity import normalise
from lra.core.names import attention_key, canonical_names
from lra_base.errors import ConfigError

PUBLISHED = "published"


class Labeler:
    """Row label of a run: the registered name computing the same thing, else name (options)."""

    def __init__(self):
        self.canonical = canonical_names()
        self.by_key = {attention_key(n): c for n, c in self.canonical.items()}

    def registered(self) -> list[str]:
        return sorted(set(self.canonical.values()))

    def __call__(self, name: str, options: dict | None) -> str:
        options = normalise(options or {})
        # every value of `impl` computes the same function (the tests hold each path to its
        # reference), so which implementation ran never splits a row
        options.pop("impl", None)
        try:
            key = attention_key(name, options)
        except ConfigError:  # not registered here, or its options changed since
            return name + (f" ({options_text(options)})" if options else "")
        if key in self.by_key:
            return self.by_key[key]
        defaults = normalise(attentions.options_dict(attentions.resolve(name)))
        diff = {k: v for k, v in options.items() if defaults.get(k) != v}
        return f"{name} ({options_text(diff)})" if diff else name


def options_text(options: dict) -> str:
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
        """Where the record is, from the report's folder (records of another folder carry `_rel`)."""
        return self.rec.get("_rel") or "runs/" + Path(self.rec.get("_path", self.id + ".json")).name


def load_runs(records: list[dict], labeler: Labeler) -> list[Run]:
    runs = [Run(r, labeler(r["attention"], r.get("attention_options")), r.get("kind") or "train") for r in records]
    return sorted(runs, key=lambda r: r.order)


def latest(runs: list[Run]) -> Run | None:
    return max(runs, key=lambda r: r.order) if runs else None


# --- formatting ----------------------------------------------------------------------------------


def num(x, spec: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def params_text(counts) -> str:
    """Parameter counts as one short text: "218k", or the range "201k-1.25M" when they differ
    (a model's embedding and some attentions grow with the task's length)."""
    def short(n):
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"

    counts = sorted({n for n in counts if n})
    if not counts:
        return "-"
    return short(counts[0]) if len(counts) == 1 or short(counts[0]) == short(counts[-1]) \
        else f"{short(counts[0])}-{short(counts[-1])}"


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
             f"lr {t.get('lr')}", f"length {d.get('seq_len')}", f"model {model_text(m)}"]
    if run.rec.get("num_params"):
        parts.append(f"{run.rec['num_params']:,} params")
    if c.get("attention_options"):
        parts.append(f"options {options_text(c['attention_options'])}")
    return ", ".join(parts)


def model_text(m: dict) -> str:
    return f"dim {m.get('dim')}, {m.get('layers')} layers, {m.get('heads')} heads, ffn {m.get('ffn_dim')}" + (
        ", grad checkpoint" if m.get("grad_checkpoint") else "")


def compiled(t: dict) -> str:
    """', compiled' (and the mode, when it is not the default) for a run whose step was compiled."""
    if not t.get("compile"):
        return ""
    mode = t.get("compile_mode", "auto")
    return ", compiled" + ("" if mode == "auto" else f" ({mode})")


def describe_bench(run: Run) -> str:
    b, t = run.rec.get("bench", {}), run.cfg.get("train", {})
    phases = b.get("phases", {})
    steps = "; ".join(f"{p}: {v.get('warmup_steps')} warm-up + {v.get('timed_steps')} timed steps"
                      + (f", load {v.get('load_average')}" if v.get("load_average") is not None else "")
                      for p, v in sorted(phases.items()))
    reason = b.get("batch_reason") or ""
    text = (f"batch {b.get('batch_size')} (paper {b.get('paper_batch_size')}; {reason}), length {b.get('seq_len')}, "
            f"model {model_text(run.cfg.get('model', {}))}, precision {t.get('precision')}"
            f"{compiled(t)}; {steps}")
    if run.rec.get("num_params"):
        text += f"; {run.rec['num_params']:,} params"
    if run.metric("peak_memory_method"):
        text += f"; memory: {run.metric('peak_memory_method')}"
    return text
