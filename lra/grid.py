"""Grid runs: every (task, attention, seed) of a sweep in its own process.

    python run_lra.py --task all --attention all --seeds 0,1,2 --preset paper
    lra train --task listops text --attention softmax,pola-a3 --seeds 0-2 --redo
    lra train --task listops --attention pola-a3 --variants baseline gate=false gate_init=zeros --seeds 0-2

A cell runs as `python -m lra.cli train --task T --attention A --seed S <the other flags>` in a
fresh interpreter (lra/core/isolation.py), so an out-of-memory error, a crash or a stuck CUDA
context in one cell never ends the sweep. With `--variants` (ablations) every variant is its own
cell, its options added as `--option KEY=VALUE`; options are part of a run's identity, so each
variant is skipped or run on its own. A cell is skipped when an "ok" training record of the
same run already exists (lra/core/identity.py: the same configuration apart from where data and
results live and the device), unless --redo. With --resume, a cell interrupted earlier continues
from its checkpoint. A summary table ends the sweep.

Packed grids. The LRA models are small (about 0.1M parameters): one run leaves a GPU mostly
idle. `--jobs K` runs up to K cells at once on the one device, each still in its own process with
its own record; their output lines carry the cell's name, progress bars are off, and a line every
minute says what runs. Before they start, the data of every task is prepared once here (a
generated smoke set, the tokenised cache), so K cells never race to write the same files. Each
cell then gets cores / K CPU threads (OMP_NUM_THREADS, unless set). Ctrl-C or SIGTERM stops the
grid: every running cell gets SIGTERM, writes its checkpoint and exits, and the same command with
--resume continues them.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

import attentions
import tasks
from lra.args import add_run_arguments, config_from_args, parse_variant
from lra.core.config import RunConfig
from lra.core.data import load_splits
from lra.core.identity import config_dict, same_run
from lra.core.isolation import Job, Pool, child_env, run_pool
from lra.core.names import expand_attentions, expand_tasks, parse_seeds, split_names
from lra.core.records import read_records
from lra_base.errors import LRAError

# Run arguments a cell sets itself, or that only the sweep reads.
EXCLUDED = {"task", "attention", "seed", "seeds", "variants", "redo", "dry_run", "jobs", "help"}


@dataclass
class Cell:
    """One (task, attention, seed) of a grid: its configuration, its command line, what became of it."""

    task: str
    attention: str
    seed: int
    config: dict
    argv: list[str]
    done: dict | None = None  # the record that already satisfies it
    outcome: str = "pending"
    seconds: float = 0.0
    record: dict | None = None
    note: str = ""
    tail: list[str] = field(default_factory=list)
    variant: str = ""  # the option set of an ablation cell ("" without --variants)

    @property
    def name(self) -> str:
        return self.attention + (f" [{self.variant}]" if self.variant else "")


def is_grid(args) -> bool:
    multi = any(n == "all" for n in split_names(args.task) + split_names(args.attention or []))
    multi |= len(split_names(args.task)) > 1 or len(split_names(args.attention or [])) > 1
    return multi or args.seeds is not None or args.redo or args.dry_run or bool(getattr(args, "variants", None))


def passthrough(args) -> list[str]:
    """The run arguments of `args` that differ from their defaults, as command-line arguments for a cell."""
    p = argparse.ArgumentParser(add_help=False)
    add_run_arguments(p)
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


def plan(args) -> list[Cell]:
    """The cells of the sweep, each validated before anything runs."""
    task_names = expand_tasks(args.task)
    attention_names = expand_attentions(args.attention or attentions.default_name())
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [args.seed]
    variants = {v: parse_variant(v) for v in getattr(args, "variants", None) or [""]}
    rest = passthrough(args)
    cells = []
    for task in task_names:
        for attention in attention_names:
            for variant, options in variants.items():
                for seed in seeds:
                    a = copy.copy(args)
                    a.task, a.attention, a.seed, a.option = [task], [attention], seed, [*args.option, *options]
                    extra = [x for k, v in options for x in ("--option", f"{k}={v}")]
                    argv = ["train", "--task", task, "--attention", attention, "--seed", str(seed), *rest, *extra]
                    cells.append(Cell(task, attention, seed, config_dict(config_from_args(a)), argv, variant=variant))
    return cells


def matches(record: dict, config: dict) -> bool:
    """Is `record` an ok training run of the cell whose config is `config`?"""
    if record.get("kind", "train") != "train" or record.get("status") != "ok":
        return False
    return same_run(record.get("config") or {}, config)


def mark_done(cells: list[Cell], results_dir, redo: bool) -> list[Cell]:
    """Attach to each cell the ok record that already satisfies it (none with --redo); return
    the cells still to run."""
    records = read_records(results_dir)
    for cell in cells:
        cell.done = None if redo else next((r for r in reversed(records) if matches(r, cell.config)), None)
        if cell.done is not None:
            cell.outcome, cell.record = "skipped", cell.done
            cell.note = f"recorded: {Path(cell.done['_path']).name}"
    return [c for c in cells if c.done is None]


def record_for(cell: Cell, runs: Path, before: set) -> dict | None:
    """The record a cell wrote: the newest file under `runs` not in `before`, for its task,
    attention and seed."""
    new = sorted(set(runs.glob("*.json")) - before) if runs.exists() else []
    fresh = [json.loads(p.read_text()) | {"_path": str(p)} for p in new]
    mine = [r for r in fresh if r.get("task") == cell.task and r.get("attention") == cell.attention
            and r.get("seed") == cell.seed and same_run(r.get("config") or {}, cell.config)]
    return mine[-1] if mine else None


def describe(cell: Cell, rc: int | None) -> None:
    """Set a finished cell's outcome and note from its record, or from its exit status and output."""
    if cell.record is not None:
        cell.outcome = cell.record["status"]
        cell.note = Path(cell.record["_path"]).name
        if cell.record.get("error"):
            cell.note += f" ({cell.record['error'].strip().splitlines()[-1][:120]})"
    elif rc in (130, 143, -2, -15):  # interrupted: the cell wrote a checkpoint (if it had started training)
        cell.outcome, cell.note = "interrupted", "checkpoint written; rerun the same command with --resume"
    else:
        cell.outcome = "error"
        cell.note = f"exit {rc}, no record: " + (cell.tail[-1][:160] if cell.tail else "no output")


def summarize(cells: list[Cell], prefix: str = "grid") -> None:
    rows = []
    for c in cells:
        acc = (c.record or {}).get("metrics", {}).get("test_accuracy") if c.outcome in ("ok", "skipped") else None
        rows.append([c.task, c.name, c.seed, c.outcome, "-" if acc is None else f"{acc:.2f}",
                     f"{c.seconds:.0f}" if c.seconds else "-", c.note])
    print(f"\n[{prefix}] summary")
    print(tabulate(rows, headers=["task", "attention", "seed", "outcome", "test acc %", "seconds", "record / reason"]))
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    print(f"[{prefix}] " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


def cell_command(cell: Cell) -> list[str]:
    return [sys.executable, "-m", "lra.cli", *cell.argv]


def run_grid(args) -> int:
    cells = plan(args)
    todo = mark_done(cells, args.results_dir, args.redo)
    print(f"[grid] {len(cells)} cells ({len(cells) - len(todo)} already recorded, skipped"
          f"{'' if args.redo else '; --redo runs them again'}), {len(todo)} to run"
          f"{f', up to {args.jobs} at once' if (args.jobs or 1) > 1 else ''}", flush=True)
    if args.dry_run:
        for c in cells:
            status = f"skip: {Path(c.done['_path']).name}" if c.done else "run"
            print(f"  {c.task} / {c.name} / seed {c.seed}: {status}")
            if not c.done:
                print(f"    {' '.join(cell_command(c))}")
        return 0
    stopped = run_cells(cells, todo, args)
    summarize(cells)
    if stopped is not None:
        print(f"[grid] stopped ({stopped}); run the same command again (with --resume) to continue", flush=True)
        signum = getattr(signal, stopped, signal.SIGTERM) if stopped.startswith("SIG") else signal.SIGTERM
        return 128 + int(signum)
    return 0 if all(c.outcome in ("ok", "skipped") for c in cells) else 1


def run_cells(cells: list[Cell], todo: list[Cell], args, admit=None, deadline: float | None = None,
              grace: float = 300.0) -> str | None:
    """Run the cells of `todo` (of the grid `cells`), up to --jobs at once; each cell's outcome,
    record and note are set as it ends. `admit(cell)` may refuse to start a cell (its reason goes
    in the note) and `deadline` (time.monotonic()) stops the cells still running, each given
    `grace` seconds to checkpoint. Returns why the grid stopped early (lra/core/isolation.py
    run_pool), or None."""
    width = max(1, args.jobs or 1)
    runs = Path(args.results_dir) / "runs"
    before = set(runs.glob("*.json")) if runs.exists() else set()
    if width > 1:
        prepare_data(todo)
    env = child_env(threads_env(width))
    by_name = {}
    for cell in todo:
        if width > 1 and "--no-progress" not in cell.argv:
            cell.argv.append("--no-progress")  # progress bars of cells side by side would be noise
        by_name[f"{cell.task}/{cell.name}/s{cell.seed}"] = cell
    jobs = [Job(name, cell_command(cell), env) for name, cell in by_name.items()]
    index = {id(c): i for i, c in enumerate(cells, 1)}

    def started(job):
        c = by_name[job.name]
        print(f"\n[grid] cell {index[id(c)]}/{len(cells)}: {c.task} / {c.name} / seed {c.seed}", flush=True)

    def ended(job):
        c = by_name[job.name]
        c.seconds, c.tail = job.seconds, job.tail
        c.record = record_for(c, runs, before)
        describe(c, job.returncode)
        if width > 1:
            print(f"[grid] {job.name}: {c.outcome} after {c.seconds:.0f} s ({c.note})", flush=True)
        return "a cell was interrupted" if c.outcome == "interrupted" else None

    pool = Pool(width, (lambda job: admit(by_name[job.name])) if admit else None, deadline, started, ended,
                grace=grace, label="grid")
    stopped = run_pool(jobs, pool)
    for job in jobs:
        if job.state == "not started":
            by_name[job.name].outcome, by_name[job.name].note = "not run", job.note
    return stopped


def threads_env(width: int) -> dict:
    """CPU threads of each of `width` cells side by side: the cores shared out (unless set)."""
    if width <= 1 or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // width))}


def prepare_data(todo: list[Cell]) -> None:
    """Generate (smoke sets) and tokenise the data of every task once, before cells run side by
    side: two cells must not write the same files at once. A failure is left to the cells, which
    record it."""
    seen = set()
    for cell in todo:
        cfg = RunConfig.from_dict(cell.config)
        key = (cfg.task, cfg.data_dir, cfg.data.subdir, json.dumps(cfg.data.options, sort_keys=True),
               json.dumps(cfg.data.generator, sort_keys=True))
        if key in seen:
            continue
        seen.add(key)
        try:
            load_splits(cfg, tasks.get(cfg.task))
        except LRAError as exc:
            print(f"[grid] data of {cfg.task}: {str(exc).splitlines()[0]} (its cells will say so)", flush=True)
