"""`lra data`: generate, prepare and verify datasets.

    lra data generate listops --data-dir DIR [--train N --val N --test N] [--seed S] [--set KEY=VALUE]
    lra data prepare TASK --data-dir DIR          tokenise once into the memory-mapped cache
    lra data verify TASK --data-dir DIR [--json]  per split: count, labels, lengths, skipped items
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lra.errors import DataError, LRAError


def add_parser(sub) -> None:
    from lra.cli import DEFAULT_DATA_DIR, key_value

    p = sub.add_parser("data", help="generate, prepare, verify or download datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    g = dsub.add_parser("generate", help="generate a synthetic dataset in the release layout")
    g.add_argument("task")
    g.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, help="training examples")
    g.add_argument("--val", type=int, help="validation examples")
    g.add_argument("--test", type=int, help="test examples")
    g.add_argument("--workers", type=int, help="processes (default: all cores)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")
    g.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="generator option, e.g. --set max_length=1000")
    g.set_defaults(func=cmd_generate)

    for name, helptext, fn in (("prepare", "tokenise a task's splits into the cache", cmd_prepare),
                               ("verify", "check a dataset: counts, labels, lengths, skipped items", cmd_verify)):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("task")
        q.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
        q.add_argument("--task-option", action="append", type=key_value, default=[], metavar="KEY=VALUE")
        if name == "verify":
            q.add_argument("--json", action="store_true", help="print one JSON object")
        q.set_defaults(func=fn)


def cmd_generate(args) -> int:
    import time

    import tasks

    task = tasks.get(args.task)
    options = {k: v for k, v in dict(train=args.train, val=args.val, test=args.test, workers=args.workers).items()
               if v is not None}
    options.update(_parse_values(dict(args.set)))
    start = time.perf_counter()
    where = task.generate(Path(args.data_dir), seed=args.seed, force=args.force, progress=True, **options)
    print(f"generated {task.name} in {time.perf_counter() - start:.1f}s: {where}")
    return 0


def _parse_values(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def cmd_prepare(args) -> int:
    import tasks

    task = tasks.get(args.task)
    for split in task.splits:
        p = task.prepared(Path(args.data_dir), split, dict(args.task_option))
        print(f"{task.name}/{split}: {len(p)} examples -> {p.meta['path']}")
    return 0


def verify(task, data_dir: Path, options: dict | None = None) -> dict:
    """Per-split statistics of a dataset; `ok` is False if a split is missing, empty or unreadable."""
    report = {"task": task.name, "data_dir": str(data_dir), "ok": True, "splits": {}}
    for split in task.splits:
        try:
            p = task.prepared(data_dir, split, options)
        except LRAError as exc:
            report["ok"] = False
            report["splits"][split] = {"count": 0, "labels": {}, "error": str(exc)}
            continue
        labels, counts = np.unique(p.labels, return_counts=True)
        lengths = p.lengths.reshape(-1)
        report["splits"][split] = {
            "count": len(p),
            "labels": {str(int(l)): int(c) for l, c in zip(labels, counts)},
            "lengths": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1),
                        "median": float(np.median(lengths)), "max": int(lengths.max())},
            "skipped": p.meta.get("skipped", {}),
            "sources": p.meta.get("sources", []),
        }
        bad = [int(l) for l in labels if not 0 <= l < task.num_classes]
        if bad:
            report["ok"] = False
            report["splits"][split]["error"] = f"labels outside 0..{task.num_classes - 1}: {bad}"
    return report


def cmd_verify(args) -> int:
    import tasks

    task = tasks.get(args.task)
    report = verify(task, Path(args.data_dir), dict(args.task_option))
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        from tabulate import tabulate

        rows = []
        for split, s in report["splits"].items():
            if "error" in s and not s["count"]:
                rows.append([split, 0, "-", "-", s["error"].splitlines()[0]])
                continue
            ls = s["lengths"]
            rows.append([split, s["count"], " ".join(f"{k}:{v}" for k, v in s["labels"].items()),
                         f"{ls['min']}/{ls['median']:.0f}/{ls['max']}",
                         ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or s.get("error", "-")])
        print(f"{task.name} under {args.data_dir}")
        print(tabulate(rows, headers=["split", "count", "labels (label:count)", "length min/median/max", "skipped"]))
        print("OK" if report["ok"] else "BROKEN")
    return 0 if report["ok"] else 1
