"""Grid runs: every (task, attention, seed) of a sweep in its own process.

    python run_lra.py --task all --attention all --seeds 0,1,2 --preset paper
    lra train --task listops,text --attention softmax,pola-a3 --seeds 0-2 --redo

A cell runs as `python -m lra.cli train --task T --attention A --seed S <the other flags>` in a
fresh interpreter, so an out-of-memory error, a crash or a stuck CUDA context in one cell never
ends the sweep. A cell is skipped when an "ok" training record of the same run already exists
(the same task, attention, resolved attention options, preset and seed, and the same settings
otherwise, apart from where data and results live and the device), unless --redo. With --resume,
a cell interrupted earlier continues from its checkpoint. A summary table ends the sweep.

`all` expands to every registered task, and to every registered attention with aliases dropped:
names that build the same class with the same resolved options (a base name whose defaults equal
one of its presets) run once, under the preset's name.
"""

from __future__ import annotations

import argparse
import codecs
import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lra.config import flatten
from lra.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
EXCLUDED = {"task", "attention", "seed", "seeds", "redo", "dry_run", "help"}
# Config keys that may differ between a recorded run and a cell that it satisfies.
IGNORED_KEYS = {"data_dir", "results_dir", "data.num_workers", "device"}


# --- names ---------------------------------------------------------------------------------------


def split_names(values) -> list[str]:
    """['a,b', 'c'] or 'a,b' -> ['a', 'b', 'c'] (order kept, repeats dropped)."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or []:
        for name in str(v).split(","):
            name = name.strip()
            if name and name not in out:
                out.append(name)
    return out


def expand_tasks(spec) -> list[str]:
    import tasks

    names = split_names(spec)
    if not names:
        raise ConfigError(f"no task given; valid tasks: {', '.join(tasks.available())} (or all)")
    out: list[str] = []
    for name in names:
        for n in tasks.available() if name == "all" else [name]:
            tasks.get(n)  # unknown names fail here, listing the valid ones
            if n not in out:
                out.append(n)
    return out


def attention_key(name: str, options: dict | None = None) -> tuple[str, str]:
    """What a name computes: its class and resolved options (equal keys = the same computation)."""
    import attentions

    entry = attentions.get(name)
    opts = attentions.options_dict(attentions.resolve(name, **(options or {})))
    return f"{entry.cls.__module__}.{entry.cls.__qualname__}", json.dumps(opts, sort_keys=True, default=str)


def canonical_names() -> dict[str, str]:
    """Every registered name -> the name it runs under in `all`: among names with the same
    class and resolved options, a preset name (it says its options) before the base name."""
    import attentions

    groups: dict[tuple, list[str]] = {}
    for name in attentions.available():
        groups.setdefault(attention_key(name), []).append(name)
    out = {}
    for names in groups.values():
        best = sorted(names, key=lambda n: (not attentions.get(n).is_preset, n))[0]
        out.update({n: best for n in names})
    return out


def expand_attentions(spec) -> list[str]:
    import attentions

    names = split_names(spec)
    if not names:
        raise ConfigError(f"no attention given; valid attentions: {', '.join(attentions.available())} (or all)")
    canonical = None
    out: list[str] = []
    for name in names:
        if name == "all":
            canonical = canonical or canonical_names()
            chosen = sorted(set(canonical.values()))
        else:
            attentions.get(name)
            chosen = [name]
        for n in chosen:
            if n not in out:
                out.append(n)
    return out


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' or '3' -> a list of seeds."""
    seeds: list[int] = []
    try:
        for part in split_names(text):
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ConfigError(f"--seeds takes a list like 0,1,2 or a range like 0-4, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds needs seeds >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))


# --- command line --------------------------------------------------------------------------------


def add_grid_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("grid (a list or `all` for --task / --attention, or --seeds, runs a sweep: "
                             "one process per run)")
    g.add_argument("--seeds", default=None, metavar="LIST", help="seeds of every cell, e.g. 0,1,2 or 0-4")
    g.add_argument("--redo", action="store_true", help="run cells that already have an ok record again")
    g.add_argument("--dry-run", action="store_true", help="list the cells and what would be skipped; run nothing")


def is_grid(args) -> bool:
    multi = any(n == "all" for n in split_names(args.task) + split_names(args.attention or ""))
    multi |= len(split_names(args.task)) > 1 or len(split_names(args.attention or "")) > 1
    return multi or args.seeds is not None or args.redo or args.dry_run


def passthrough(args) -> list[str]:
    """The flags of `args` that differ from their defaults, as command-line arguments for a cell."""
    from lra.cli import add_train_arguments

    p = argparse.ArgumentParser(add_help=False)
    add_train_arguments(p)
    out: list[str] = []
    for action in p._actions:
        if action.dest in EXCLUDED or not action.option_strings:
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default:
            continue
        flag = max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreTrueAction):
            out.append(flag)
        elif isinstance(action, argparse._AppendAction):
            for k, v in value:
                out += [flag, f"{k}={v}"]
        else:
            out += [flag, str(value)]
    return out


# --- matching records --------------------------------------------------------------------------


def _normalise(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def cell_config(cfg) -> dict:
    """The config of a cell as its record would hold it (resolved attention options)."""
    import attentions

    d = cfg.to_dict()
    d["attention_options"] = attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options))
    return _normalise(d)


def matches(record: dict, config: dict) -> bool:
    """Is `record` an ok training run of the cell whose config is `config`? Settings only one side
    knows (a field added to the config since) are not held against it."""
    if record.get("kind", "train") != "train" or record.get("status") != "ok":
        return False
    a, b = flatten(_normalise(record.get("config") or {})), flatten(config)
    for key in ("task", "attention", "preset", "seed"):
        if record.get(key) != config.get(key):
            return False
    if _normalise(record.get("attention_options")) != config["attention_options"]:
        return False
    return all(a[k] == b[k] for k in (set(a) & set(b)) - IGNORED_KEYS)


# --- running -------------------------------------------------------------------------------------


def record_for(cell: "Cell", runs: Path, before: set) -> dict | None:
    """The record a cell wrote: the newest file under `runs` not in `before`, for its task,
    attention and seed."""
    new = sorted(set(runs.glob("*.json")) - before) if runs.exists() else []
    fresh = [json.loads(p.read_text()) | {"_path": str(p)} for p in new]
    mine = [r for r in fresh if r.get("task") == cell.task and r.get("attention") == cell.attention
            and r.get("seed") == cell.seed]
    return mine[-1] if mine else None


def describe(cell: "Cell", rc: int | None) -> None:
    """Set a finished cell's outcome and note from its record, or from its exit status and output."""
    if cell.record is not None:
        cell.outcome = cell.record["status"]
        cell.note = Path(cell.record["_path"]).name
        if cell.record.get("error"):
            cell.note += f" ({cell.record['error'].strip().splitlines()[-1][:120]})"
    elif rc in (130, 143):  # interrupted: the cell wrote a checkpoint
        cell.outcome, cell.note = "interrupted", "checkpoint written; rerun the same command with --resume"
    else:
        cell.outcome = "error"
        cell.note = f"exit {rc}, no record: " + (cell.tail[-1][:160] if cell.tail else "no output")


def summarize(cells: list["Cell"], prefix: str = "grid") -> None:
    from tabulate import tabulate

    rows = []
    for c in cells:
        acc = (c.record or {}).get("metrics", {}).get("test_accuracy") if c.outcome in ("ok", "skipped") else None
        rows.append([c.task, c.attention, c.seed, c.outcome, "-" if acc is None else f"{acc:.2f}",
                     f"{c.seconds:.0f}" if c.seconds else "-", c.note])
    print(f"\n[{prefix}] summary")
    print(tabulate(rows, headers=["task", "attention", "seed", "outcome", "test acc %", "seconds", "record / reason"]))
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    print(f"[{prefix}] " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


@dataclass
class Cell:
    task: str
    attention: str
    seed: int
    config: dict
    argv: list[str]
    done: dict | None = None  # the record that satisfies it
    outcome: str = "pending"
    seconds: float = 0.0
    record: dict | None = None
    note: str = ""
    tail: list[str] = field(default_factory=list)


def child_env() -> dict:
    """The environment of a cell: this checkout's packages first on the path, so the cell runs the
    same code as the sweep whatever is installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def stream(cmd: list[str], env: dict, started=None) -> tuple[int, list[str]]:
    """Run `cmd`, echoing its output as it comes (progress bars included); return the exit status
    and the last lines of its output. `started(proc)` is called with the child once it runs (a
    cluster job uses it to forward a pre-emption signal)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    if started is not None:
        started(proc)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    try:
        while True:
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            text = decoder.decode(chunk)
            sys.stdout.write(text)
            sys.stdout.flush()
            tail = (tail + text)[-8000:]
    except KeyboardInterrupt:
        proc.wait()  # the cell got the same Ctrl-C: let it write its checkpoint
        raise
    finally:
        proc.stdout.close()
    rc = proc.wait()
    lines = [l.strip() for l in tail.replace("\r", "\n").splitlines() if l.strip()]
    return rc, lines[-20:]


def plan(args) -> list[Cell]:
    """The cells of the sweep, each validated before anything runs."""
    import attentions
    from lra.cli import config_from_args

    task_names = expand_tasks(args.task)
    attention_names = expand_attentions(args.attention or attentions.default_name())
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    rest = passthrough(args)
    cells = []
    for task in task_names:
        for attention in attention_names:
            for seed in seeds:
                a = copy.copy(args)
                a.task, a.attention, a.seed = task, attention, seed
                cfg = config_from_args(a)
                argv = ["train", "--task", task, "--attention", attention, "--seed", str(seed), *rest]
                cells.append(Cell(task, attention, seed, cell_config(cfg), argv))
    return cells


def mark_done(cells: list[Cell], results_dir, redo: bool) -> list[Cell]:
    """Attach to each cell the ok record that already satisfies it (none with --redo); return
    the cells still to run."""
    from lra.results import read_records

    records = read_records(results_dir)
    for cell in cells:
        cell.done = None if redo else next((r for r in reversed(records) if matches(r, cell.config)), None)
        if cell.done is not None:
            cell.outcome, cell.record = "skipped", cell.done
            cell.note = f"recorded: {Path(cell.done['_path']).name}"
    return [c for c in cells if c.done is None]


def run_grid(args) -> int:
    cells = plan(args)
    runs = Path(args.results_dir) / "runs"
    todo = mark_done(cells, args.results_dir, args.redo)
    print(f"[grid] {len(cells)} cells ({len(cells) - len(todo)} already recorded, skipped"
          f"{'' if args.redo else '; --redo runs them again'}), {len(todo)} to run", flush=True)
    if args.dry_run:
        for c in cells:
            status = f"skip: {Path(c.done['_path']).name}" if c.done else "run"
            print(f"  {c.task} / {c.attention} / seed {c.seed}: {status}")
            if not c.done:
                print(f"    {sys.executable} -m lra.cli {' '.join(c.argv)}")
        return 0

    env = child_env()
    stopped = None
    for i, cell in enumerate(cells, 1):
        if cell.done is not None:
            continue
        print(f"\n[grid] cell {i}/{len(cells)}: {cell.task} / {cell.attention} / seed {cell.seed}", flush=True)
        before = set(runs.glob("*.json")) if runs.exists() else set()
        t0 = time.perf_counter()
        try:
            rc, cell.tail = stream([sys.executable, "-m", "lra.cli", *cell.argv], env)
        except KeyboardInterrupt:
            rc = 130
        cell.seconds = time.perf_counter() - t0
        cell.record = record_for(cell, runs, before)
        describe(cell, rc)
        if cell.outcome == "interrupted":
            stopped = rc
            break

    summarize(cells)
    if stopped is not None:
        print("[grid] stopped by a signal; run the same command again (with --resume) to continue", flush=True)
        return stopped
    return 0 if all(c.outcome in ("ok", "skipped") for c in cells) else 1
