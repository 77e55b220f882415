"""Diagnostics: the attention maps of trained runs (`lra analyze` records), per task and preset:
mean row entropy and effective rank of every attention's maps, with the figures of the maps."""

from __future__ import annotations

from lra.report.context import PRESET_ORDER, Context
from lra.report.runs import Run, describe_env, latest, md_table, num, task_label

INTRO = (
    "The PolaFormer paper's evidence is about attention maps: lower entropy than other linear attentions "
    "(its Figure 5 and Theorem 1), spiky maps close to softmax's (Figure 1), a higher rank from the "
    "convolution. `lra analyze` rebuilds a trained run from its best-dev checkpoint and takes every layer's "
    "N x N maps (`AttentionBase.attention_maps`: the matrix A with out = A v that the layer applies; PolaFormer "
    "has a same-sign and an opposite-sign map, without its convolution and gate) on the first dev examples, "
    "real tokens only. Entropy: mean over real query rows of the entropy (nats) of |A| renormalised over the "
    "real keys; uniform rows give ln n (the `uniform` column: mean ln n over the sequences), one-hot rows 0. "
    "Effective rank: exp of the entropy of the normalised singular values of A (Roy & Vetterli, 2007), "
    "between 1 and n. Values are means over layers and heads (per layer: mean over heads, layer 0 first) "
    "and over the seeds analysed (the latest analysis of each seed).")


def section(ctx: Context) -> list[str]:
    runs = ctx.of_kind("analysis")
    out = ["## Diagnostics: attention maps of trained runs", "", INTRO, ""]
    order = {t: i for i, t in enumerate(ctx.tasks)}
    presets = {p: i for i, p in enumerate(PRESET_ORDER)}
    groups = sorted({(r.rec["task"], r.rec.get("preset")) for r in runs},
                    key=lambda g: (order.get(g[0], len(order)), presets.get(g[1], len(presets)), str(g[1])))
    if not groups:
        return out + ["No analysis records yet: train runs, then `lra analyze` them.", ""]
    for task, preset in groups:
        here = [r for r in runs if r.rec["task"] == task and r.rec.get("preset") == preset]
        out += [f"### {task_label(task)}, {preset} preset", "", table(ctx, here, task, preset), ""]
        out += figures(ctx, here) + [""]
    return out


def per_seed(runs: list[Run]) -> list[Run]:
    """The latest analysis of each seed."""
    seeds: dict = {}
    for r in runs:
        seeds.setdefault(r.rec.get("seed"), []).append(r)
    return [latest(seeds[s]) for s in sorted(seeds, key=str)]


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def by_layer(chosen: list[Run], name: str, key: str, spec: str) -> str:
    """'5.10 / 4.98': per layer, the mean over heads and seeds."""
    grids = [r.metric("maps")[name][key] for r in chosen]
    layers = len(grids[0])
    return " / ".join(num(mean([sum(g[li]) / len(g[li]) for g in grids]), spec) for li in range(layers))


def cite(ctx: Context, chosen: list[Run], where: str) -> str:
    parts = []
    for r in chosen:
        a = r.rec.get("analysis") or {}
        cut = f", cut to {a['max_len']} tokens" if a.get("max_len") else ""
        parts.append(f"`{r.id}` (seed {r.rec.get('seed')}, {r.rec.get('status')}) of run `{a.get('source_run')}` "
                     f"(best-dev checkpoint at step {a.get('checkpoint_step')}, dev accuracy "
                     f"{num(r.metric('best_val_accuracy'), '.2f')}%): {a.get('inputs')} {a.get('split')} examples"
                     f"{cut}, {len(a.get('lengths') or [])} sequences; {describe_env(r)}; record {r.rel}")
    return ctx.sources.add(f"{where}: " + "; ".join(parts))


def table(ctx: Context, runs: list[Run], task: str, preset: str) -> str:
    rows = []
    labels = [label for label in ctx.attention_rows(runs) if any(r.label == label for r in runs)]
    for label in labels:
        chosen = per_seed([r for r in runs if r.label == label])
        ref = cite(ctx, chosen, f"Diagnostics ({task_label(task)}, {preset} preset), {label}")
        ok = [r for r in chosen if r.rec.get("status") == "ok"]
        if not ok:
            error = (chosen[-1].rec.get("error") or chosen[-1].rec.get("status") or "failed").splitlines()[0]
            rows.append([label, "-", f"{error[:120]} {ref}"] + ["-"] * 6)
            continue
        uniform = num(mean([(r.rec.get("analysis") or {}).get("uniform_entropy") for r in ok]), ".2f")
        acc = num(mean([r.metric("best_val_accuracy") for r in ok]), ".2f")
        for name in ok[0].metric("maps"):
            entropy = mean([r.metric("maps")[name]["entropy_mean"] for r in ok])
            rank = mean([r.metric("maps")[name]["effective_rank_mean"] for r in ok])
            rows.append([label, name, f"{num(entropy, '.3f')} {ref}", by_layer(ok, name, "entropy", ".2f"), uniform,
                         num(rank, ".1f"), by_layer(ok, name, "effective_rank", ".1f"), acc, str(len(ok))])
    not_here = sorted(set(ctx.labeler.registered()) - set(labels))
    note = f"\n\nNot analysed here: {', '.join(not_here)}." if not_here else ""
    return md_table(["attention", "map", "entropy (nats)", "entropy by layer", "uniform (ln n)", "effective rank",
                     "rank by layer", "checkpoint dev acc %", "seeds"], rows) + note


def figures(ctx: Context, runs: list[Run]) -> list[str]:
    """Links to the maps of each analysed run (the latest per attention and seed), in row order."""
    out = []
    for label in ctx.attention_rows(runs):
        for r in per_seed([r for r in runs if r.label == label]):
            figure = (r.rec.get("analysis") or {}).get("figure")
            if figure:
                beside = (r.rec["analysis"].get("beside") or {}).get("attention")
                out.append(f"[{label}, seed {r.rec.get('seed')}" + (f", beside {beside}" if beside else "")
                           + f"]({figure})")
    return ["Maps of the first dev example, per layer and head: " + " · ".join(out)] if out else []
