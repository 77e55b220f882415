"""The report's figures, drawn on demand: each section names a figure file and hands over a
function that draws it; `lra report` calls them unless --no-figures. PNGs are written atomically
and carry no timestamp, so the same records give the same bytes."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from lra.report.runs import num, task_label
from lra_base.atomic import atomic_write


def _plt():
    # A machine without matplotlib still gets the markdown (`lra report --no-figures`) and every
    # other command: the figures need it, nothing else does.
    import matplotlib  # optional: deferred on purpose

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred on purpose, as above

    return plt


def _save(fig, path: Path) -> None:
    """PNG written atomically like the markdown: an interrupted report never leaves a torn figure.
    The bounding box takes in legends and labels outside the axes, so none is clipped."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110, metadata={"Software": None},
                                             bbox_inches="tight"))


# Colours that stay apart on white (the default cycle repeats after ten: softmax and pola-a7 were
# one blue), then markers, so every attention of a figure has a style of its own.
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22", "#000075", "#800000", "#469990", "#f032e6")
MARKERS = ("o", "s", "^", "D", "v")


def styles(labels) -> dict:
    """label -> (colour, marker), distinct for up to len(COLOURS) x len(MARKERS) labels, assigned
    in sorted order so the same records always draw the same figure."""
    return {label: (COLOURS[i % len(COLOURS)], MARKERS[i // len(COLOURS) % len(MARKERS)])
            for i, label in enumerate(sorted(set(labels)))}


def nothing_to_show(path: Path, title: str, why: str) -> None:
    """A figure that says why it is empty, rather than an empty frame."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}: nothing to show yet\n{why}", ha="center", va="center", wrap=True, fontsize=10)
    _save(fig, path)
    plt.close(fig)


def scaling_figure(curves: dict, title: str):
    def draw(path: Path):
        plt = _plt()
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        style = styles(curves)
        for label, (n, t, m, ts, ms) in sorted(curves.items()):
            if not n:
                continue
            colour, marker = style[label]
            axes[0].plot(n, t, marker=marker, color=colour, label=f"{label} (slope {num(ts, '.2f')})")
            axes[1].plot(n, m, marker=marker, color=colour, label=f"{label} (slope {num(ms, '.2f')})")
        for ax, ylabel in zip(axes, ("training step, ms", "training peak memory, MiB")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.suptitle(f"Scaling with length ({title})")
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)

    return draw


def accuracy_figure(task_names, ours: dict, published: dict, baseline: str, device: str | None, preset,
                    why_empty: str = ""):
    """One panel per task: each attention in its own colour and marker, filled = ours, hollow =
    published, named in one legend (labels beside points overlapped where methods cluster)."""
    def draw(path: Path):
        shown = [t for t in task_names if ours.get(t) or published.get(t)]
        if not shown:
            nothing_to_show(path, "Accuracy against throughput", why_empty)
            return
        plt = _plt()
        style = styles(label for points in (*ours.values(), *published.values()) for label, _, _ in points)
        cols = min(3, len(shown))
        rows = math.ceil(len(shown) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False)
        for ax, task in zip(axes.flat, shown):
            for label, x, y in published.get(task, []):
                ax.scatter([x], [y], facecolors="none", edgecolors=style[label][0], marker=style[label][1], s=42)
            for label, x, y in ours.get(task, []):
                ax.scatter([x], [y], color=style[label][0], marker=style[label][1], s=42)
            ax.set_title(task_label(task))
            ax.set_xlabel(f"training throughput / {baseline}")
            ax.set_ylabel("accuracy %")
            ax.grid(True, alpha=0.3)
        for ax in list(axes.flat)[len(shown):]:
            ax.axis("off")
        handles = [plt.Line2D([], [], linestyle="none", marker=m, color=c, label=label)
                   for label, (c, m) in sorted(style.items())]
        fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 0.95), fontsize=8, title="attention")
        fig.suptitle(f"Accuracy vs throughput: filled = ours ({preset or 'no'} preset"
                     f"{', ' + device if device else ''}), hollow = published (PolaFormer)", fontsize=9)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)

    return draw


def maps_figure(rows: list, title: str):
    """Attention maps side by side: one row of panels per layer, each panel (label, n x n array)
    drawn as |A| with its own colour scale clipped at its 99th percentile (a spiky map and a flat
    one both stay visible)."""
    def draw(path: Path):
        plt = _plt()
        ncols = max(len(r) for r in rows)
        fig, axes = plt.subplots(len(rows), ncols, figsize=(2.3 * ncols, 2.6 * len(rows) + 0.6), squeeze=False)
        for ax_row, row in zip(axes, rows):
            for j, ax in enumerate(ax_row):
                ax.set_xticks([])
                ax.set_yticks([])
                if j >= len(row):
                    ax.axis("off")
                    continue
                label, a = row[j]
                a = np.abs(np.asarray(a, dtype=np.float64))
                vmax = float(np.quantile(a, 0.99)) or float(a.max()) or 1.0
                ax.imshow(a, cmap="viridis", vmin=0.0, vmax=vmax, interpolation="nearest")
                ax.set_title(label, fontsize=7)
        fig.suptitle("\n".join(textwrap.wrap(title, width=int(24 * ncols))), fontsize=8)
        fig.tight_layout()
        _save(fig, path)
        plt.close(fig)

    return draw
