"""`lra campaign`: one command that turns a short session on a device into the leaderboard's
numbers, in stages, each on disk as soon as it ends.

    lra campaign --device cuda --budget-minutes 9 --results-dir output/campaign
    lra campaign --device cpu --tiny --results-dir /tmp/rehearsal       # every stage at toy sizes

Stages, in order (lra/campaign_stages.py):
  preflight  the machine (torch, CUDA, GPU, optional packages), training steps of every attention
             under the paper precision, the conformance checks that matter on the device
             (lra/preflight.py), in a process of its own -> preflight.json
  bench      Table 6 on the device: `lra bench` at every task's paper batch and length for every
             task x attention, Path-X included (out-of-memory recorded). On CUDA one fresh process
             per task (lra/bench_task.py); on CPU one per measurement.
  data       ListOps at the official size (96k / 2k / 2k) and Pathfinder-32 (as many images as
             the budget allows, at least 20k), generated with all cores and tokenised once; data
             already under --data-dir is used as it is.
  train      the `quick` preset (the paper model, batch and lengths, a tenth of the steps) of every
             attention on both, K runs at a time on the one device (`--jobs`, lra/grid.py).
  report     the leaderboard of the campaign's records beside the reference records (a CUDA
             Table 6 beside the CPU one; quick-preset accuracy in its own block) -> LEADERBOARD.md.

The budget. The campaign ends within --budget-minutes: before each stage it estimates the
stage's cost from what it measured so far (preflight step times, bench step times, generation
rates) and skips, with a line saying so, what no longer fits (a whole stage, a bench task, a
training cell); work still running at the end of the budget is stopped (training runs write a
checkpoint). The report and the archive are always written.

On disk, under --results-dir: runs/*.json (every record, written atomically as it is made),
preflight.json, campaign.json (each stage's status, timings and records: a rerun skips finished
stages and recorded cells, and resumes interrupted training runs), campaign.log (everything
printed), LEADERBOARD.md with its figures, and campaign.tar.gz: all of that in one archive of at
most 16 MiB, rewritten after every stage, so one file carries a campaign off a machine. Extract
it into a results folder and run the same command to continue where it stopped.

Optional packages (datasets, submitit, matplotlib) are imported where used; a missing one ends
only the stage that needs it, with a line naming it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import signal
import sys
import tarfile
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tabulate import tabulate

from lra import campaign_stages as stages
from lra.campaign_plan import Stopped
from lra.core.config import DEFAULT_DATA_DIR, DEFAULT_RESULTS_DIR, REFERENCE_DIR
from lra.core.env import git_sha, pick_device
from lra.core.records import now
from lra_base.atomic import atomic_write, atomic_write_text
from lra_base.errors import ConfigError

STATE, LOG, ARCHIVE = "campaign.json", "campaign.log", "campaign.tar.gz"
ARCHIVE_LIMIT = 16 * 2**20
RESERVE = {"tiny": 5.0, "full": 45.0}  # seconds kept for stopping training runs, the report and the archive


def add_parser(sub) -> None:
    p = sub.add_parser("campaign", help="preflight, Table 6 bench, data, quick training and report in one budgeted run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cuda | cpu | auto (default auto)")
    p.add_argument("--budget-minutes", type=float, default=10.0, help="wall time for everything (default 10)")
    p.add_argument("--results-dir", default=None, help=f"default {DEFAULT_RESULTS_DIR}/campaign")
    p.add_argument("--data-dir", default=None,
                   help=f"where ListOps and Pathfinder are found or generated (default {DEFAULT_DATA_DIR}; "
                        "with --tiny <results-dir>/data)")
    p.add_argument("--jobs", type=int, default=None,
                   help="training runs at once on the device (default: 8 on CUDA, 1 on CPU, 2 with --tiny)")
    p.add_argument("--tiny", action="store_true", help="every stage at toy sizes (the CPU rehearsal)")
    p.add_argument("--stages", default=",".join(stages.ORDER), help=f"a comma list of {', '.join(stages.ORDER)}")
    p.add_argument("--redo", default="", metavar="STAGES", help="run these stages again even if finished "
                                                                "(cells already recorded are still skipped)")
    p.add_argument("--archive", default=None, help=f"the archive to write (default <results-dir>/{ARCHIVE})")
    p.add_argument("--reference-dir", default=None,
                   help="records shown beside the campaign's in the report (default: the committed reference "
                        "results of this checkout; `none` for none)")
    p.set_defaults(func=cmd_campaign)


@dataclass
class Campaign:
    """A campaign's settings, its state on disk and its clock."""

    results: Path
    data_dir: Path
    device: str
    tiny: bool
    jobs: int
    budget: float  # seconds
    stages: list[str]
    archive: Path
    reference: Path | None
    start: float = field(default_factory=time.monotonic)
    state: dict = field(default_factory=dict)

    @property
    def deadline(self) -> float:
        """time.monotonic() by which the stages before the report must end."""
        return self.start + self.budget - RESERVE["tiny" if self.tiny else "full"]

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def stage_state(self, name: str) -> dict:
        return self.state["stages"].setdefault(name, {"status": "pending"})

    def save(self) -> None:
        atomic_write_text(self.results / STATE, json.dumps(self.state, indent=1, default=str) + "\n")


def settings(args) -> Campaign:
    device = args.device if args.device != "auto" else stages.auto_device()
    if device not in ("cuda", "cpu"):
        raise ConfigError(f"--device takes cuda, cpu or auto, got {args.device!r}")
    pick_device(device)  # CUDA asked for where there is none: say so before any stage starts
    chosen = [s.strip() for s in args.stages.split(",") if s.strip()]
    for name in chosen + [s.strip() for s in args.redo.split(",") if s.strip()]:
        if name not in stages.ORDER:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(stages.ORDER)}")
    if args.budget_minutes <= 0:
        raise ConfigError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    results = Path(args.results_dir or Path(DEFAULT_RESULTS_DIR) / "campaign")
    data = Path(args.data_dir or (results / "data" if args.tiny else DEFAULT_DATA_DIR))
    jobs = args.jobs if args.jobs is not None else (8 if device == "cuda" else 2 if args.tiny else 1)
    if jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    reference = None if args.reference_dir == "none" else Path(args.reference_dir or REFERENCE_DIR)
    return Campaign(results, data, device, args.tiny, jobs, args.budget_minutes * 60, chosen,
                    Path(args.archive or results / ARCHIVE), reference)


def load_state(c: Campaign, redo: list[str]) -> None:
    """campaign.json as left by an earlier run of the same campaign (or a new one)."""
    path = c.results / STATE
    mine = {"device": c.device, "tiny": c.tiny}
    if path.exists():
        c.state = json.loads(path.read_text())
        if c.state.get("settings") != mine:
            raise ConfigError(f"{path} is a campaign with settings {c.state.get('settings')}, not {mine}: use "
                              "another --results-dir (or delete that file)")
    else:
        c.state = {"settings": mine, "stages": {}, "invocations": []}
    for name in redo:
        c.stage_state(name)["status"] = "pending"
    c.state["invocations"].append({"started_at": now(), "budget_minutes": c.budget / 60, "jobs": c.jobs,
                                   "stages": c.stages, "git_sha": git_sha(), "argv": sys.argv[1:]})


# --- the log --------------------------------------------------------------------------------------


class Tee:
    """A text stream writing to the terminal and to the campaign's log."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return False  # progress bars stay off: the log keeps lines, not redraws

    def fileno(self) -> int:
        return self.stream.fileno()


@contextmanager
def logged(path: Path):
    """stdout and stderr (children's streamed output included) also go to `path`; SIGTERM and
    SIGINT become Stopped, so a stage ends through its cleanup and the campaign writes its state."""
    path.parent.mkdir(parents=True, exist_ok=True)

    me = os.getpid()

    def stop(signum, frame):
        if os.getpid() != me:  # a worker forked from here (the data generators' pools): die as usual
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        raise Stopped(signum)

    with open(path, "a", buffering=1) as log:
        old = sys.stdout, sys.stderr, {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
        sys.stdout, sys.stderr = Tee(sys.stdout, log), Tee(sys.stderr, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old[0], old[1]
            for s, h in old[2].items():
                signal.signal(s, h)


# --- stages ---------------------------------------------------------------------------------------


def run_stage(c: Campaign, name: str) -> None:
    """One stage: skipped when finished earlier or when it does not fit the budget left; its
    outcome in campaign.json and in the archive either way."""
    st = c.stage_state(name)
    if st["status"] == "done":
        print(f"\n[campaign] {name}: finished in an earlier run ({st.get('finished_at')}); skipped", flush=True)
        return
    stage = stages.STAGES[name]
    need = stage.estimate(c) if name != "report" else None
    if name != "report" and (c.left() <= 0 or (need is not None and need > c.left())):
        st.update(status="skipped", note=(f"needs about {need:.0f} s, " if need is not None else "")
                  + f"{max(0.0, c.left()):.0f} s of the budget left")
        print(f"\n[campaign] {name}: skipped: {st['note']}", flush=True)
        c.save()
        return
    print(f"\n[campaign] === {name} === ({c.left():.0f} s of the budget left"
          + (f"; estimated {need:.0f} s" if need is not None else "") + ")", flush=True)
    st.update(status="running", started_at=now(), note="")
    c.save()
    t0 = time.monotonic()
    try:
        st.update(stage.run(c))
    except ModuleNotFoundError as exc:
        st.update(status="failed", note=f"needs the package {exc.name!r}, which is not installed "
                                        f"(pip install {exc.name}); the other stages go on")
    except Stopped:
        st.update(status="stopped", note="stopped by a signal", seconds=round(time.monotonic() - t0, 1))
        c.save()
        raise
    except Exception as exc:
        st.update(status="failed", note=f"{type(exc).__name__}: {exc}"[:500], traceback=traceback.format_exc(limit=-6))
    st.update(finished_at=now(), seconds=round(time.monotonic() - t0, 1))
    print(f"[campaign] {name}: {st['status']} in {st['seconds']:.0f} s" + (f": {st['note']}" if st.get("note") else ""),
          flush=True)
    c.save()
    pack(c)


def pack(c: Campaign) -> None:
    """campaign.tar.gz: the records, the state, the log, the report and its figures (at most 16
    MiB: the log is cut to its end when it would not fit)."""
    files = [p for p in sorted(c.results.glob("*")) if p.is_file() and p.suffix in (".json", ".md", ".png")]
    files += sorted((c.results / "runs").glob("*.json"))
    log = c.results / LOG
    for keep in (None, 4 * 2**20, 2**20, 0):
        def write(f):
            with tarfile.open(fileobj=f, mode="w:gz") as tar:
                for p in files:
                    tar.add(p, arcname=str(p.relative_to(c.results)))
                if log.exists() and keep != 0:
                    add_tail(tar, log, keep)

        atomic_write(c.archive, write)
        if c.archive.stat().st_size <= ARCHIVE_LIMIT:
            return
    print(f"[campaign] warning: {c.archive} is {c.archive.stat().st_size / 2**20:.1f} MiB even without the log "
          f"(limit {ARCHIVE_LIMIT // 2**20} MiB)", flush=True)


def add_tail(tar: tarfile.TarFile, path: Path, keep: int | None) -> None:
    data = path.read_bytes()
    if keep is not None and len(data) > keep:
        data = b"[... the start of the log is left out to keep the archive small ...]\n" + data[-keep:]
    info = tarfile.TarInfo(path.name)
    info.size, info.mtime = len(data), int(time.time())
    tar.addfile(info, io.BytesIO(data))


def summary(c: Campaign) -> int:
    rows = [[name, (st := c.stage_state(name))["status"], f"{st.get('seconds', 0):.0f}", st.get("note", "")[:110]]
            for name in stages.ORDER if name in c.stages]
    print("\n[campaign] summary")
    print(tabulate(rows, headers=["stage", "status", "seconds", "note"]))
    print(f"[campaign] {time.monotonic() - c.start:.0f} s of {c.budget:.0f}; everything is under {c.results} and in "
          f"{c.archive} ({c.archive.stat().st_size / 2**20:.2f} MiB)" if c.archive.exists() else "", flush=True)
    bad = [n for n in c.stages if c.stage_state(n)["status"] in ("failed", "stopped")]
    return 1 if bad or c.stage_state("preflight").get("problems") else 0


def cmd_campaign(args) -> int:
    c = settings(args)
    c.results.mkdir(parents=True, exist_ok=True)
    load_state(c, [s.strip() for s in args.redo.split(",") if s.strip()])
    with logged(c.results / LOG):
        print(f"[campaign] {now()}: device {c.device}, budget {c.budget / 60:g} min, {c.jobs} training run(s) at "
              f"once{', TINY (a rehearsal: toy sizes)' if c.tiny else ''}; results {c.results}, data {c.data_dir}",
              flush=True)
        c.save()
        try:
            for name in stages.ORDER:
                if name in c.stages:
                    run_stage(c, name)
        except Stopped as exc:
            print(f"[campaign] stopped by {exc}; run the same command again to continue", flush=True)
            pack(c)
            summary(c)
            return 128 + exc.signum
        if "report" not in c.stages:
            pack(c)
        return summary(c)
