"""What every section of a report reads: the runs by kind, their labels, the baseline, the tasks
and presets in order, the numbered sources, and the figures the sections ask for."""

from __future__ import annotations

from dataclasses import dataclass, field

import attentions
import tasks
from lra.core import paper_numbers as paper
from lra.core.identity import normalise
from lra.report.runs import Labeler, Run, Sources, load_runs

PRESET_ORDER = ("paper", "quick", "smoke")


@dataclass
class Context:
    labeler: Labeler
    runs: list[Run]
    baseline: str
    tasks: list[str]
    presets: list[str]
    sources: Sources = field(default_factory=Sources)
    figures: dict = field(default_factory=dict)  # file name -> function(path) that draws it

    def of_kind(self, kind: str) -> list[Run]:
        return [r for r in self.runs if r.kind == kind]

    @property
    def primary(self) -> str | None:
        """The preset whose accuracy sits in Table 6 and the figure: the most paper-like one recorded."""
        return self.presets[0] if self.presets else None

    def variant(self, r: Run) -> tuple[str, dict] | None:
        """(the attention a run is a variant of, its options that differ from that attention's), or
        None when the run computes a registered attention (or one this version does not know).
        Variants are the Ablations section's rows, not Table 4's or Table 6's."""
        if r.label in self.labeler.canonical.values():
            return None
        name = r.rec["attention"]
        try:
            defaults = normalise(attentions.options_dict(attentions.resolve(name)))
        except ValueError:  # an attention (or option) this version does not have
            return None
        options = normalise(r.rec.get("attention_options") or {})
        return self.labeler.canonical.get(name, name), {k: v for k, v in options.items() if defaults.get(k) != v}

    def attention_rows(self, runs: list[Run]) -> list[str]:
        """Every registered attention (aliases folded) and every recorded label, published order first."""
        labels = set(self.labeler.registered()) | {r.label for r in runs if self.variant(r) is None}
        published = [r.attention for r in paper.TABLE4 if r.attention] + [c.attention for c in paper.TABLE6]
        order = {name: i for i, name in reversed(list(enumerate(published)))}
        return sorted(labels, key=lambda l: (order.get(l, len(order)), l))


def make_context(records: list[dict], baseline: str | None = None) -> Context:
    labeler = Labeler()
    runs = load_runs(records, labeler)
    base = baseline or next(c.attention for c in paper.TABLE6 if c.throughput_ratio == 1.0)
    base = labeler(base, None) if base in labeler.canonical else base
    recorded_tasks = {r.rec["task"] for r in runs}
    extra = sorted((set(tasks.available()) | recorded_tasks) - set(paper.TASKS))
    presets = {r.rec.get("preset") for r in runs if r.kind == "train"}
    ordered = [p for p in PRESET_ORDER if p in presets] + sorted(presets - set(PRESET_ORDER))
    return Context(labeler, runs, base, list(paper.TASKS) + extra, ordered)
