"""`lra data`: generate, download, prepare, verify datasets; loader throughput; example images.

    lra data generate listops|pathfinder|pathx --data-dir DIR [--seed S] [options]
        listops:         --train N --val N --test N (default the release's 96k / 2k / 2k)
        pathfinder|pathx: --images N (default 200k) --difficulty D --per-batch N
        any generator option: --set KEY=VALUE
    lra data download TASK|all --data-dir DIR [--source release|archive|hub] [--url URL] [--force]
    lra data prepare TASK --data-dir DIR          tokenise once into the memory-mapped cache
    lra data verify TASK --data-dir DIR [--json]  per split: count, labels, lengths, skipped items;
                                                  exit status 1 on a broken dataset
    lra data throughput [TASK...] --data-dir DIR  loader samples/s next to the paper model's training samples/s
    lra data examples pathfinder|pathx --out FILE.png   a grid of generated positives and negatives
"""

from __future__ import annotations

import inspect
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from tabulate import tabulate

import attentions
import tasks
from lra.args import key_value
from lra.core.config import DEFAULT_CACHE_DIR, DEFAULT_DATA_DIR
from lra.core.data import BatchView
from lra.core.isolation import is_oom
from lra.core.model import build_model
from lra.core.measure import Timing, time_steps
from lra.core.presets import make_config
from lra.core.step import Precision, TrainStep
from lra.measurements import CPU_TOKENS, choose_batch
from lra_base.atomic import check_writable
from lra_base.errors import AlreadyDone, ConfigError, LRAError
from tasks.download import SOURCES, download

CACHE_HELP = "where the prepared data is cached (default <data-dir>/.cache, env LRA_CACHE_DIR)"


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="generate, download, prepare or verify datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True
    add_generate(dsub)

    d = dsub.add_parser("download", help="fetch the published data (resumable, checksummed)")
    d.add_argument("task", help="a task name, or `all`")
    d.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    d.add_argument("--source", help="release (LRA archive), archive (aclImdb / CIFAR originals) or hub (Hugging Face)")
    d.add_argument("--url", help="fetch the archive from this mirror instead")
    d.add_argument("--force", action="store_true", help="replace folders that already exist")
    d.set_defaults(func=cmd_download)

    for name, helptext, fn in (("prepare", "tokenise a task's splits into the cache", cmd_prepare),
                               ("verify", "check a dataset: counts, labels, lengths, skipped items", cmd_verify)):
        q = dsub.add_parser(name, help=helptext)
        q.add_argument("task")
        q.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
        q.add_argument("--task-option", action="append", type=key_value, default=[], metavar="KEY=VALUE")
        q.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=CACHE_HELP)
        if name == "verify":
            q.add_argument("--json", action="store_true", help="print one JSON object")
        q.set_defaults(func=fn)

    t = dsub.add_parser("throughput", help="loader samples/s per task beside the paper model's training samples/s")
    t.add_argument("tasks", nargs="*", help="tasks (default: all with data under --data-dir)")
    t.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    t.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help=CACHE_HELP)
    t.add_argument("--batches", type=int, default=20, help="timed loader batches per task")
    t.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to time")
    t.add_argument("--train-steps", type=int, default=2, help="timed training steps (0: skip the model)")
    t.add_argument("--train-batch", type=int, help="time the model on this many samples (default: the paper batch, "
                                                   "capped at 16384 tokens per step as `lra bench` does on CPU)")
    t.add_argument("--attention", default=attentions.default_name(),
                   help=f"the attention of the model timed (default {attentions.default_name()})")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=cmd_throughput)

    e = dsub.add_parser("examples", help="write a PNG grid of generated images (positives over negatives)")
    e.add_argument("task", help="a task whose generator draws images (pathfinder, pathx)")
    e.add_argument("--out", required=True)
    e.add_argument("--per-label", type=int, default=4)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--difficulty", default="curv_contour_length_14")
    e.set_defaults(func=cmd_examples)


def add_generate(dsub) -> None:
    g = dsub.add_parser("generate", help="generate a synthetic dataset (listops, pathfinder, pathx) in the release layout")
    g.add_argument("task")
    g.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, help="listops: training examples")
    g.add_argument("--val", type=int, help="listops: validation examples")
    g.add_argument("--test", type=int, help="listops: test examples")
    g.add_argument("--images", type=int, help="pathfinder/pathx: images in all (split 80/10/10 when loaded)")
    g.add_argument("--difficulty", help="pathfinder/pathx: curv_baseline | curv_contour_length_9 | "
                                        "curv_contour_length_14 (default)")
    g.add_argument("--per-batch", type=int, help="pathfinder/pathx: images per imgs/<batch> folder (default 1000)")
    g.add_argument("--workers", type=int, help="processes (default: all cores)")
    g.add_argument("--force", action="store_true", help="overwrite existing files")
    g.add_argument("--set", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="generator option, e.g. --set max_length=1000")
    g.set_defaults(func=cmd_generate)


# --- generate --------------------------------------------------------------------------------------


def cmd_generate(args) -> int:
    task = tasks.get(args.task)
    if not task.can_generate:
        raise ConfigError(f"task {task.name!r} has no generator (real data only); get it with:\n  "
                          f"{task.how_to_get(Path(args.data_dir))}")
    flags = dict(train=args.train, val=args.val, test=args.test, images=args.images, difficulty=args.difficulty,
                 per_batch=args.per_batch, workers=args.workers)
    options = {k: v for k, v in flags.items() if v is not None}
    options.update(_parse_values(dict(args.set)))
    params = inspect.signature(task.generate).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    valid = sorted(k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("seed", "force", "progress"))
    unknown = [k for k in options if k not in params and not takes_any]
    if unknown:
        raise ConfigError(f"{task.name} generator has no option {unknown[0]!r}; its options: {', '.join(valid)}")
    check_writable(args.data_dir, f"the generated {task.name} data", "pass --data-dir DIR, a folder you can write")
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    try:
        where = task.generate(Path(args.data_dir), seed=args.seed, force=args.force, progress=True, **options)
    except TypeError as exc:  # a settings override the generator does not know
        raise ConfigError(f"{task.name} generator: {exc}") from None
    except AlreadyDone as exc:  # a rerun of the same command: nothing to do, and not a failure
        print(exc)
        return 0
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    rate = ""
    if "images" in params:
        n = options.get("images", params["images"].default)
        # images per CPU-second does not depend on what else the machine is running
        rate = f" ({n / seconds:.1f} images/s; {n / max(cpu, 1e-9):.1f} images per CPU-second)"
    print(f"generated {task.name} in {seconds:.1f}s, {cpu:.1f} CPU-s{rate}: {where}")
    return 0


def _cpu_seconds() -> float:
    """CPU time of this process and of its finished worker processes."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _parse_values(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


# --- download --------------------------------------------------------------------------------------


def cmd_download(args) -> int:
    names = list(SOURCES) if args.task == "all" else [tasks.get(args.task).name]
    if args.url and len(names) > 1:
        raise ConfigError("--url names one archive: use it with one task, not `all`")
    data_dir = Path(args.data_dir)
    done_release = False
    status = 0
    for name in names:
        if args.source and args.source not in SOURCES[name]:
            if args.task == "all":
                continue
            raise ConfigError(f"task {name!r} downloads from {', '.join(SOURCES[name])}, not {args.source!r}")
        source = args.source or next(iter(SOURCES[name]))
        if source == "release" and done_release:
            continue
        download(name, data_dir, source=source, url=args.url, force=args.force)
        done_release |= source == "release"
    # check what can be checked: every split of every task is found where the loaders look
    for name in names:
        task = tasks.get(name)
        for split in task.splits:
            try:
                task.source_files(data_dir, split, task.resolve_options({}))
            except LRAError as exc:
                print(f"{name}/{split}: NOT FOUND after download\n{exc}")
                status = 1
                break
        else:
            print(f"{name}: all splits found under {data_dir} (`lra data verify {name} --data-dir {data_dir}` "
                  "reads them)")
    return status


# --- prepare / verify ----------------------------------------------------------------------------


def cmd_prepare(args) -> int:
    task = tasks.get(args.task)
    for split in task.splits:
        start = time.perf_counter()
        p = task.prepared(Path(args.data_dir), split, dict(args.task_option), args.cache_dir)
        print(f"{task.name}/{split}: {len(p)} examples in {time.perf_counter() - start:.1f}s -> {p.meta['path']}")
    return 0


def verify(task, data_dir: Path, options: dict | None = None, cache_dir: str | None = None) -> dict:
    """Per-split statistics of a dataset; `ok` is False if a split is missing, empty, unreadable,
    has labels outside the task's classes, or lost more than 1% of its items as unreadable (the
    rule training applies too: tasks/base.py PreparedSplit.broken)."""
    report = {"task": task.name, "data_dir": str(data_dir), "ok": True, "splits": {}}
    for split in task.splits:
        try:
            p = task.prepared(data_dir, split, options, cache_dir)
        except LRAError as exc:
            report["ok"] = False
            report["splits"][split] = {"count": 0, "labels": {}, "error": str(exc)}
            continue
        labels, counts = np.unique(p.labels, return_counts=True)
        lengths = p.lengths.reshape(-1)
        skipped = p.meta.get("skipped", {})
        entry = {
            "count": len(p),
            "labels": {str(int(l)): int(c) for l, c in zip(labels, counts)},
            "lengths": {"min": int(lengths.min()), "mean": round(float(lengths.mean()), 1),
                        "median": float(np.median(lengths)), "max": int(lengths.max())},
            "skipped": skipped,
            "options": p.meta.get("options", {}),
            "sources": p.meta.get("sources", [])[:3] + (["..."] if len(p.meta.get("sources", [])) > 3 else []),
            "cache": p.meta["path"],
        }
        report["splits"][split] = entry
        bad = [int(l) for l in labels if not 0 <= l < task.num_classes]
        if bad:
            report["ok"] = False
            entry["error"] = f"labels outside 0..{task.num_classes - 1}: {bad}"
        if p.broken():
            report["ok"] = False
            entry["error"] = p.broken()
    return report


def cmd_verify(args) -> int:
    task = tasks.get(args.task)
    report = verify(task, Path(args.data_dir), dict(args.task_option), args.cache_dir)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print_verify(task, args.data_dir, report)
    return 0 if report["ok"] else 1


def print_verify(task, data_dir, report: dict) -> None:
    """A table of the splits; every error in full below it (a table cell would cut the paths and
    the fix out of a multi-line message)."""
    rows = []
    for split, s in report["splits"].items():
        if "error" in s and not s["count"]:
            rows.append([split, 0, "-", "-", "error (below)"])
            continue
        ls = s["lengths"]
        notes = ", ".join(f"{k}: {v}" for k, v in s["skipped"].items()) or "-"
        rows.append([split, s["count"], " ".join(f"{k}:{v}" for k, v in s["labels"].items()),
                     f"{ls['min']}/{ls['median']:.0f}/{ls['max']}", notes + ("; error (below)" if "error" in s else "")])
    print(f"{task.name} under {data_dir}")
    print(tabulate(rows, headers=["split", "count", "labels (label:count)", "length min/median/max",
                                  "skipped / notes"]))
    shown = set()
    for split, s in report["splits"].items():
        if s.get("error") and s["error"] not in shown:  # the same missing-data message for every split: once
            shown.add(s["error"])
            print(f"{split}: {s['error']}")
    print("OK" if report["ok"] else "BROKEN")


# --- throughput ------------------------------------------------------------------------------------


def loader_rate(view, batch_size: int, batches: int, workers: int, seed: int = 0) -> float:
    """Samples/s of a DataLoader over `view` with random full batches, after one warm-up batch."""
    n = len(view)
    rng = np.random.default_rng(seed)
    sampler = [rng.choice(n, size=min(batch_size, n), replace=False) for _ in range(batches + 1 + workers)]
    dl = torch.utils.data.DataLoader(view, sampler=sampler, batch_size=None, num_workers=workers,
                                     prefetch_factor=4 if workers else None)
    it = iter(dl)
    for _ in range(1 + workers):  # warm-up: worker start-up is not loading
        next(it)
    start = time.perf_counter()
    got = 0
    for _ in range(batches):
        got += len(next(it)["labels"])
    return got / (time.perf_counter() - start)


def train_rate(task, batch: dict, attention: str, steps: int) -> float:
    """Training samples/s of the paper model on one batch, CPU: the training loop's own step
    (lra/core/step.py) with the task's paper recipe, one warm-up step, then `steps` timed steps."""
    cfg = make_config(task.name, "paper", attention=attention, device="cpu")
    cfg.data.seq_len = batch["ids"].shape[-1]
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = build_model(cfg, task)
    step = TrainStep(model, cfg.train, Precision("fp32", device), total_steps=steps + 1)
    timed = time_steps(lambda: step(batch), device, Timing(warmup=1, steps=steps, min_seconds=0.0, max_steps=steps),
                       len(batch["labels"]))
    return timed["throughput"]


def cmd_throughput(args) -> int:
    data_dir = Path(args.data_dir)
    names = args.tasks or tasks.available()
    rows, report = [], {}
    for name in names:
        task = tasks.get(name)
        r = task.recipe
        try:
            split = task.prepared(data_dir, "train", cache_dir=args.cache_dir)
        except LRAError as exc:
            if args.tasks:
                raise
            print(f"{name}: skipped ({str(exc).splitlines()[0]})")
            continue
        view = BatchView(split, r.seq_len)
        entry = {"batch_size": r.batch_size, "seq_len": r.seq_len, "examples": len(split)}
        for w in args.workers:
            entry[f"loader_w{w}"] = loader_rate(view, r.batch_size, args.batches, w)
        if args.train_steps:
            # The paper batch of the long tasks does not fit on a CPU (Path-X: 128 x 16K tokens):
            # cap it as `lra bench` does, and report an out-of-memory instead of ending the command.
            n, _ = choose_batch(task, r.seq_len, args.train_batch, "cpu", CPU_TOKENS)
            n = min(n, len(view))
            entry["train_batch"] = n
            try:
                entry["train"] = train_rate(task, view[np.arange(n)], args.attention, args.train_steps)
            except (MemoryError, RuntimeError) as exc:
                if not is_oom(exc):
                    raise
                entry["train"] = None
        report[name] = entry
        train_cells = []
        if args.train_steps:
            rate = entry["train"]
            batch_note = "" if n == r.batch_size else f" (batch {n})"
            train_cells = ([f"{rate:.3g}{batch_note}",
                            f"{min(entry[f'loader_w{w}'] for w in args.workers) / rate:,.0f}x"]
                           if rate else [f"out of memory{batch_note}: try --train-batch", "-"])
        rows.append([name, r.batch_size, r.seq_len * task.num_inputs, len(split)]
                    + [f"{entry[f'loader_w{w}']:,.0f}" for w in args.workers] + train_cells)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    headers = ["task", "batch", "tokens/sample", "examples"] + [f"loader samples/s ({w} workers)" for w in args.workers]
    if args.train_steps:
        headers += [f"train samples/s ({args.attention}, paper model)", "loader / train"]
    print(tabulate(rows, headers=headers, disable_numparse=True))
    return 0


# --- examples --------------------------------------------------------------------------------------


def cmd_examples(args) -> int:
    out = tasks.get(args.task).write_examples(Path(args.out), per_label=args.per_label, seed=args.seed,
                                              difficulty=args.difficulty)
    print(f"wrote {out}: top row label 1 (connected), bottom row label 0")
    return 0
