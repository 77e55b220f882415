"""The stages of `lra campaign` (lra/campaign.py): each estimates its cost from what the campaign
measured so far and runs with the pieces the suite already has: the preflight program
(lra/preflight.py), bench cells and their measurement (lra/bench.py, lra/bench_task.py), the
tasks' generators, grid cells (lra/grid.py) and the report (lra/report/). The budget arithmetic
lives in lra/campaign_plan.py.

A stage returns what goes into campaign.json: its status ("done", "partial" when the budget left
part of it undone, "failed"), a note, and what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

import tasks
from lra import bench, grid, train
from lra import campaign_plan as plan
from lra.bench_task import ISOLATION, measure_task
from lra.core.config import RunConfig
from lra.core.env import git_sha, memory_total_mb
from lra.core.identity import config_dict, same_run
from lra.core.isolation import PACKAGE_ROOT, Running, child_env, python_command
from lra.core.names import expand_attentions, expand_tasks
from lra.core.records import read_records
from lra.measurements import Plan, checked_phases, timing_for
from lra.report import build_report
from lra_base.atomic import atomic_write_text
from lra_base.errors import MissingDataError

ORDER = ("preflight", "bench", "data", "train", "report")
TRAIN_TASKS = ("listops", "pathfinder")
BENCH_TASK_ORDER = ("listops", "pathfinder", "text", "retrieval", "image", "pathx")  # training needs the first two


@dataclass(frozen=True)
class Stage:
    estimate: Callable  # (campaign) -> seconds, or None when unknown
    run: Callable  # (campaign) -> the stage's entry in campaign.json


def auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_child(cmd: list[str], deadline: float) -> int | str:
    """Run `cmd` in a session of its own, its output streamed (lines, no progress bars: the log
    keeps it); "deadline" if it had to be killed."""
    child = Running(cmd, child_env({"LRA_GIT_SHA": git_sha(), "TQDM_DISABLE": "1"}), session=True)
    try:
        while child.poll() is None:
            if time.monotonic() >= deadline:
                child.signal(signal.SIGKILL)
                child.wait()
                return "deadline"
            time.sleep(0.1)
    finally:
        child.signal(signal.SIGKILL)  # no-op once it ended; if the campaign was stopped, it goes too
    return child.wait()


def preflight_result(c) -> dict:
    path = c.results / "preflight.json"
    return json.loads(path.read_text()) if path.exists() else {}


# --- preflight ------------------------------------------------------------------------------------


def run_preflight(c) -> dict:
    out = c.results / "preflight.json"
    cmd = python_command("-m", "lra.preflight", "--device", c.device, "--out", str(out)) + (["--tiny"] if c.tiny else [])
    rc = run_child(cmd, c.deadline)
    if rc != 0 or not out.exists():
        return {"status": "failed", "note": "out of time" if rc == "deadline" else f"the preflight exited with {rc}"}
    pf = preflight_result(c)
    problems = [f"{x['check']} [{x['attention'] or '-'}]: {x['status']}" for x in pf["checks"]
                if x["status"] in ("fail", "oom")]
    problems += [f"training steps [{n}]: {s['status']}" for n, s in pf["steps"].items() if s["status"] != "ok"]
    missing = [k for k, v in pf["machine"]["packages"].items() if v is None]
    note = (f"{len(problems)} problem(s): " + "; ".join(problems[:5])) if problems else "every check passed"
    return {"status": "done", "note": note + (f"; optional packages missing: {', '.join(missing)}" if missing else ""),
            "problems": problems, "files": ["preflight.json"], "device_name": pf["machine"]["env"]["device_name"]}


# --- bench ----------------------------------------------------------------------------------------


def parse(add_parser, argv: list[str]) -> argparse.Namespace:
    """A command's arguments as its own parser makes them (defaults included)."""
    p = argparse.ArgumentParser(prog="lra")
    add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(argv)


def bench_args(c) -> argparse.Namespace:
    t = plan.BENCH_TIMING["tiny" if c.tiny else c.device]
    argv = ["bench", "--attention", "all", "--device", c.device, "--results-dir", str(c.results),
            "--warmup-steps", str(t["warmup"]), "--steps", str(t["steps"]), "--min-seconds", str(t["min_seconds"]),
            "--max-step-seconds", str(t["max_step_seconds"])]
    if c.tiny:
        argv += ["--batch-size", "2", "--seq-len", "64"]
    return parse(bench.add_parser, argv)


def bench_plan(c, args) -> Plan:
    """lra bench's plan, without probing the device here (the campaign leaves CUDA to its
    children): the machine as the preflight saw it stands in for a measurement that never reports."""
    device = torch.device(c.device)
    limit = ((memory_total_mb() or 0) // 2 or None) if c.device == "cpu" else None
    env = preflight_result(c).get("machine", {}).get("env") or {"device": c.device, "device_name": "?"}
    os.environ.setdefault("LRA_GIT_SHA", git_sha())
    return Plan(device, checked_phases(args), timing_for(args, c.device), limit, env)


def bench_cells(c, args) -> list:
    """Every task x attention, the tasks training needs first; the rehearsal measures every task
    with the attentions it trains (the preflight has stepped every attention already)."""
    names = expand_tasks("all")
    order = [t for t in BENCH_TASK_ORDER if t in names] + [t for t in names if t not in BENCH_TASK_ORDER]
    return bench.plan_cells(args, order, expand_attentions(plan.train_attentions(c)), c.device)


def recorded(c, cell, kind: str = "bench") -> dict | None:
    """The record of this campaign's device that already measures `cell`."""
    want = config_dict(cell.config)
    for r in plan.records(c):
        if r.get("kind") == kind and (r.get("env") or {}).get("device") == c.device and same_run(r["config"], want):
            return r
    return None


def estimate_bench(c) -> float | None:
    args = bench_args(c)
    cells = [x for x in bench_cells(c, args) if recorded(c, x) is None]
    first = [x for x in cells if x.task == cells[0].task] if cells else []
    return plan.bench_seconds(c, first, per_task=True) if first else 0.0  # the first task at least


def run_bench(c) -> dict:
    args = bench_args(c)
    p = bench_plan(c, args)
    how = "task" if c.device == "cuda" or c.tiny else "cell"
    cells = bench_cells(c, args)
    todo = [x for x in cells if recorded(c, x) is None]
    share = 1.0 if not {"data", "train"} & set(c.stages) else plan.BENCH_SHARE
    deadline = time.monotonic() + share * c.left()
    groups = [[x for x in todo if x.task == t] for t in dict.fromkeys(x.task for x in todo)]
    if c.tiny:
        groups = [todo] if todo else []  # the rehearsal: every task in one process, one start-up
    skipped, scale, made = [], 1.0, []
    for group in groups:
        need = plan.bench_seconds(c, group, per_task=how == "task") * scale
        left = deadline - time.monotonic()
        if need > left:
            skipped.append(f"{group[0].task} ({len(group)} cells: needs about {need:.0f} s, {max(0, left):.0f} s left)")
            print(f"[campaign] bench: skipping {skipped[-1]}", flush=True)
            continue
        t0 = time.monotonic()
        if how == "task":
            print(f"[bench] {', '.join(dict.fromkeys(x.task for x in group))}: {len(group)} cells in one fresh "
                  f"process", flush=True)
            made += measure_task(args, p, group, deadline, on_record=bench.announce)
        else:
            made += bench.measure_cells(args, p, group, how, deadline)
        scale = plan.calibrate(scale, need / scale, time.monotonic() - t0)
    missing = [x for x in cells if recorded(c, x) is None]
    note = f"{len(cells) - len(missing)} of {len(cells)} cells recorded ({how} isolation: "
    note += (ISOLATION if how == "task" else "a process per measurement") + ")"
    if skipped:
        note += "; not measured: " + "; ".join(skipped)
    return {"status": "partial" if missing else "done", "note": note, "records": [r["run_id"] for r in made],
            "oom": sorted(f"{r['task']}/{r['attention']}" for r in made if r["status"] == "oom")}


# --- data -----------------------------------------------------------------------------------------


PATHFINDER_ROOT = ("lra_release", "pathfinder32", "curv_contour_length_14")


def estimate_data(c) -> float | None:
    return plan.data_seconds(c, plan.pathfinder_generate(c, 0.0))


def run_data(c) -> dict:
    out = {}
    folder = c.data_dir / "lra_release" / "listops-1000"
    interrupted = (folder / "basic_train.tsv").exists() and not (folder / "GENERATED.json").exists() \
        and not (folder / "basic_test.tsv").exists()  # an earlier generation killed between its files
    out["listops"] = ensure(c, "listops", {**plan.listops_sizes(c), **({"force": True} if interrupted else {})})
    out["pathfinder"] = ensure(c, "pathfinder", plan.pathfinder_generate(c, c.left(), c.data_dir.joinpath(*PATHFINDER_ROOT)))
    bad = [k for k, v in out.items() if v["status"] != "ok"]
    note = "; ".join(f"{k}: {v['note']}" for k, v in out.items())
    return {"status": "failed" if bad else "done", "note": note, "data": out}


def ensure(c, name: str, generate: dict) -> dict:
    """The task's data under the data folder: found, or generated with every core; then tokenised
    into the cache once (so training runs side by side never race to write it)."""
    task = tasks.get(name)
    t0 = time.monotonic()
    try:
        counts = {s: len(task.prepared(c.data_dir, s)) for s in task.splits}
        how = "found"
    except MissingDataError:
        print(f"[campaign] data: generating {name} {generate} under {c.data_dir} with {os.cpu_count()} cores",
              flush=True)
        rc = run_child(generate_command(c, name, generate), c.deadline)
        if rc != 0:  # out of time: an interrupted Pathfinder set is finished by the next run
            return {"status": "failed", "note": "out of time" if rc == "deadline" else f"the generator exited with {rc}"}
        counts = {s: len(task.prepared(c.data_dir, s)) for s in task.splits}
        how = "generated"
    total = sum(counts.values())
    seconds = round(time.monotonic() - t0, 1)
    print(f"[campaign] data: {name} {how}: {counts} ({seconds} s)", flush=True)
    short = plan.too_small(c, name, total)
    return {"status": "failed" if short else "ok", "how": how, "counts": counts, "seconds": seconds,
            "note": short or f"{how}, {total} examples in {seconds:.0f} s"}


def generate_command(c, name: str, options: dict) -> list[str]:
    """`lra data generate` in a child: killed at the deadline, it leaves nothing half-written
    (generated files are written atomically; Pathfinder resumes its finished batches)."""
    flags = {"train": "--train", "val": "--val", "test": "--test", "images": "--images", "per_batch": "--per-batch"}
    argv = ["-m", "lra.cli", "data", "generate", name, "--data-dir", str(c.data_dir)]
    for key, value in options.items():
        if key == "force":
            argv += ["--force"] if value else []
        else:
            argv += [flags[key], str(value)] if key in flags else ["--set", f"{key}={value}"]
    return python_command(*argv)


# --- train ----------------------------------------------------------------------------------------


def with_data(c) -> list[str]:
    """The training tasks whose data is under the data folder (the data stage may have been cut
    short) and was not found wanting by it (too small a set)."""
    checked = (c.stage_state("data").get("data") or {})
    present = []
    for name in TRAIN_TASKS:
        task = tasks.get(name)
        if (checked.get(name) or {}).get("status") == "failed":
            continue
        try:
            task.source_files(c.data_dir, "train", task.resolve_options({}))
            present.append(name)
        except MissingDataError:
            pass
    return present


def train_args(c) -> argparse.Namespace:
    argv = ["train", "--task", *(with_data(c) or TRAIN_TASKS), "--attention", *plan.train_attentions(c), "--preset", "quick",
            "--device", c.device, "--data-dir", str(c.data_dir), "--results-dir", str(c.results),
            "--jobs", str(c.jobs), "--resume", "--no-progress"]
    if c.tiny:
        argv += ["--steps", "2", "--eval-every", "2", "--batch-size", "4", "--seq-len", "128",
                 "--set", "train.eval_samples=8", "--set", "data.max_test=16"]
    return parse(train.add_parser, argv)


def estimate_train(c) -> float | None:
    args = train_args(c)
    todo = grid.mark_done(grid.plan(args), args.results_dir, False)
    costs = [plan.train_seconds(c, RunConfig.from_dict(x.config)) for x in todo]
    known = [x for x in costs if x is not None]
    if not todo:
        return 0.0
    return min(known) if known else 2 * plan.STARTUP[c.device]  # its cheapest run must fit (unknown: a start-up)


def run_train(c) -> dict:
    if not with_data(c):
        return {"status": "failed", "note": f"no ListOps or Pathfinder data under {c.data_dir}: run the data stage"}
    args = train_args(c)
    cells = grid.plan(args)
    todo = grid.mark_done(cells, args.results_dir, False)
    cost = {id(x): plan.train_seconds(c, RunConfig.from_dict(x.config)) for x in todo}
    packing = plan.Packing(c.jobs)
    known = [v for v in cost.values() if v is not None]
    print(f"[campaign] train: {len(todo)} quick-preset runs ({len(cells) - len(todo)} recorded already), "
          f"{c.jobs} at once; {sum(known):.0f} s of runs estimated alone ({len(known)} estimated), "
          f"{c.left():.0f} s left", flush=True)

    def admit(cell):
        packing.learn([(x.seconds, cost[id(x)]) for x in todo if x.outcome == "ok"])  # not a quick crash
        need = cost[id(cell)]
        if need is None:
            return None
        need *= packing.factor
        return None if need <= c.left() else f"needs about {need:.0f} s, {max(0, c.left()):.0f} s of the budget left"

    stopped = grid.run_cells(cells, todo, args, admit, c.deadline, grace=plan.GRACE)
    grid.summarize(cells, "campaign train")
    if stopped in ("SIGINT", "SIGTERM"):  # the cells wrote their checkpoints: a rerun resumes them
        raise plan.Stopped(getattr(signal, stopped))
    done = [x for x in cells if x.outcome in ("ok", "skipped", "failed", "oom", "diverged")]
    note = f"{len(done)} of {len(cells)} runs recorded; packing factor {packing.factor:.2f}"
    left = [f"{x.task}/{x.attention} ({x.outcome}: {x.note})" for x in cells if x not in done]
    if left:
        note += "; not finished: " + "; ".join(left[:6]) + (" ..." if len(left) > 6 else "")
    return {"status": "done" if not left else "partial", "note": note, "stopped": stopped,
            "records": [x.record["run_id"] for x in cells if x.record],
            "estimates": {f"{x.task}/{x.attention}": [cost.get(id(x)), round(x.seconds, 1)] for x in todo}}


# --- report ---------------------------------------------------------------------------------------


def run_report(c) -> dict:
    records = read_records(c.results)
    ref, where = [], None
    if c.reference is not None and (c.reference / "runs").is_dir():
        ref, where = read_records(c.reference), cited(c, c.reference)
        for r in ref:
            r["_rel"] = cited(c, Path(r["_path"]))
    report = build_report(records + ref, None, included=[where] if ref else [])
    text = (f"> Made by `lra campaign` on {c.device} (its stages, timings and records: campaign.json, "
            f"campaign.log){'; the reference records of the code checkout beside its own' if ref else ''}.\n\n")
    if c.tiny:
        text += "> REHEARSAL (`lra campaign --tiny`): toy sizes that check the stages run; not results.\n\n"
    text += report.markdown
    atomic_write_text(c.results / "LEADERBOARD.md", text)
    note = f"LEADERBOARD.md from {len(records)} campaign records" + (f" and {len(ref)} reference records" if ref else "")
    try:
        for name, draw in sorted(report.figures.items()):
            draw(c.results / name)
        note += f", {len(report.figures)} figures"
    except ModuleNotFoundError as exc:  # matplotlib: the markdown is written, the figures are not
        note += f"; figures not drawn: the package {exc.name!r} is not installed (pip install {exc.name})"
        print(f"[campaign] report: {note}", flush=True)
    return {"status": "done", "note": note, "files": ["LEADERBOARD.md", *sorted(report.figures)]}


def cited(c, path: Path) -> str:
    """A path as the report cites it: from the report's folder when that is in the checkout,
    else as `<checkout>/...` (an archive carried off the machine has no such path)."""
    path, results = path.resolve(), c.results.resolve()
    if results.is_relative_to(PACKAGE_ROOT) or not path.is_relative_to(PACKAGE_ROOT):
        return os.path.relpath(path, results)
    return "<checkout>/" + str(path.relative_to(PACKAGE_ROOT))


STAGES = {
    "preflight": Stage(plan.preflight_seconds, run_preflight),
    "bench": Stage(estimate_bench, run_bench),
    "data": Stage(estimate_data, run_data),
    "train": Stage(estimate_train, run_train),
    "report": Stage(lambda c: None, run_report),
}
