"""`lra sweep`: every (task, attention, seed) cell of a grid as its own job, through submitit.

    lra sweep --task all --attention all --seeds 0-2 --preset paper --executor slurm \
        --partition gpu --gpus 1 --cpus 8 --mem-gb 32 --timeout-min 720 --data-dir /shared/lra
    lra sweep --task listops --attention softmax,pola-a3 --executor local      # one machine

The cells and their flags are exactly those of `lra train` grids (lra/grid.py): the same names
(`all`, lists, `--seeds`), the same validation before anything is submitted, and the shared
results folder as the store: a cell with an "ok" record of the same run is skipped unless `--redo`.

Each job runs its cell as `python -m lra.cli train ... --resume` in a child process. When SLURM
(or submitit's local executor) warns a job that it is about to be pre-empted or to time out,
submitit calls the job's `checkpoint()`: it forwards SIGTERM to the child, which writes its
training checkpoint and exits, and the job is requeued; the requeued job resumes from that
checkpoint. Running the same `lra sweep` command again also resubmits whatever has not finished,
and every resubmitted cell resumes from its last checkpoint.

By default the command waits for its jobs and prints a summary; failed cells are reported with the
tail of their log. `--no-wait` submits and returns (the job logs are under `--log-dir`).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

from lra import grid
from lra.args import add_run_arguments, key_value
from lra.core.isolation import child_env, stream
from lra_base.errors import ConfigError


class CellJob:
    """A submitit job for one cell. Picklable: it holds only the cell's command-line arguments."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)
        self._child: subprocess.Popen | None = None

    def __call__(self) -> dict:
        def started(proc):
            self._child = proc

        rc, tail = stream([sys.executable, "-m", "lra.cli", *self.argv], child_env(), started)
        return {"returncode": rc, "tail": tail}

    def checkpoint(self, *args, **kwargs):
        """Pre-emption or time-out: let the training process checkpoint, then requeue this job."""
        import submitit  # optional (the `cluster` extra): needed only by `lra sweep`, deferred on purpose

        child = self._child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=600)
            except subprocess.TimeoutExpired:
                child.kill()
            # The job exits from this handler: echo what the child said last (where it stopped)
            # into the job's log before it goes.
            if child.stdout is not None:
                sys.stdout.write(child.stdout.read().decode("utf-8", "replace"))
                sys.stdout.flush()
        return submitit.helpers.DelayedSubmission(CellJob(self.argv))

    def __getstate__(self):
        return {"argv": self.argv, "_child": None}


def add_parser(sub) -> None:
    p = sub.add_parser("sweep", help="submit each (task, attention, seed) as its own job (SLURM or local) via submitit",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    s = p.add_argument_group("cluster")
    s.add_argument("--executor", choices=["slurm", "local"], default="slurm",
                   help="slurm: submit with sbatch; local: submitit's local executor, jobs as processes here")
    s.add_argument("--log-dir", default=None, help="job logs and submitit state (default <results-dir>/sweeps)")
    s.add_argument("--partition", help="SLURM partition")
    s.add_argument("--gpus", type=int, default=None, help="GPUs per job (default 1 on slurm, 0 locally)")
    s.add_argument("--cpus", type=int, default=None, help="CPUs per job")
    s.add_argument("--mem-gb", type=float, default=None, help="memory per job")
    s.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit per job (default 24 h)")
    s.add_argument("--parallel", type=int, default=None, help="at most this many jobs of the sweep at once (SLURM arrays)")
    s.add_argument("--slurm", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. --slurm account=myacct --slurm qos=high")
    s.add_argument("--no-wait", action="store_true", help="submit and return without waiting for the jobs")
    p.set_defaults(func=cmd_sweep)


def make_executor(args):
    try:
        import submitit  # optional (the `cluster` extra): needed only by `lra sweep`, deferred on purpose
    except ImportError:
        raise ConfigError("lra sweep needs submitit: pip install 'lra-suite[cluster]' (or pip install submitit)") from None
    folder = Path(args.log_dir or Path(args.results_dir) / "sweeps") / "%j"
    executor = submitit.AutoExecutor(folder=folder, cluster=args.executor)
    params = {"timeout_min": args.timeout_min, "name": "lra"}
    gpus = args.gpus if args.gpus is not None else (1 if args.executor == "slurm" else 0)
    if gpus:
        params["gpus_per_node"] = gpus
    if args.cpus:
        params["cpus_per_task"] = args.cpus
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    if args.executor == "slurm":
        if args.partition:
            params["slurm_partition"] = args.partition
        if args.parallel or args.jobs:
            params["slurm_array_parallelism"] = args.parallel or args.jobs
        if args.slurm:
            params["slurm_additional_parameters"] = dict(args.slurm)
    executor.update_parameters(**params)
    return executor


def cmd_sweep(args) -> int:
    cells = grid.plan(args)  # every cell is validated before anything is submitted
    todo = grid.mark_done(cells, args.results_dir, args.redo)
    for cell in todo:
        if "--resume" not in cell.argv:
            cell.argv.append("--resume")  # a resubmitted or requeued cell continues from its checkpoint
    print(f"[sweep] {len(cells)} cells ({len(cells) - len(todo)} already recorded, skipped), "
          f"{len(todo)} to submit to {args.executor}", flush=True)
    if args.dry_run:
        for c in todo:
            print(f"  {c.task} / {c.attention} / seed {c.seed}: python -m lra.cli {' '.join(c.argv)}")
        return 0
    if not todo:
        grid.summarize(cells, "sweep")
        return 0

    executor = make_executor(args)
    runs = Path(args.results_dir) / "runs"
    before = set(runs.glob("*.json")) if runs.exists() else set()
    jobs = submit(executor, todo, args)
    for cell, job in zip(todo, jobs):
        print(f"[sweep] {cell.task} / {cell.attention} / seed {cell.seed}: job {job.job_id}", flush=True)
    print(f"[sweep] logs: {executor.folder}", flush=True)
    if args.no_wait:
        print("[sweep] not waiting; run the same command again to see what is recorded and resubmit the rest")
        return 0

    for cell, job in zip(todo, jobs):
        t0 = time.perf_counter()
        rc = None
        try:
            out = job.result()
            rc, cell.tail = out["returncode"], out["tail"]
        except Exception as exc:  # the job itself died (node failure, cancelled, submitit error)
            cell.tail = _log_tail(job) or [str(exc).strip().splitlines()[-1]]
        cell.seconds = time.perf_counter() - t0
        cell.record = grid.record_for(cell, runs, before)
        grid.describe(cell, rc)
        if cell.outcome not in ("ok", "skipped"):
            print(f"\n[sweep] {cell.task} / {cell.attention} / seed {cell.seed}: {cell.outcome}; "
                  f"end of job {job.job_id}'s log:")
            for line in (cell.tail or _log_tail(job))[-15:]:
                print(f"    {line}")
    grid.summarize(cells, "sweep")
    return 0 if all(c.outcome in ("ok", "skipped") for c in cells) else 1


def submit(executor, todo: list, args) -> list:
    """Submit every cell: on SLURM as one job array (--parallel / --jobs cap it there); with the
    local executor and --jobs K, K jobs at a time, the next submitted as one ends (the local
    executor alone would start them all at once)."""
    width = args.jobs or 0
    if args.executor != "local" or width < 1 or width >= len(todo):
        with executor.batch():  # one array job on SLURM
            return [executor.submit(CellJob(c.argv)) for c in todo]
    if args.no_wait:
        raise ConfigError("--jobs with --executor local waits to submit each job as another ends; drop --no-wait")
    jobs: list = []
    for cell in todo:
        while sum(not j.done() for j in jobs) >= width:
            time.sleep(0.5)
        jobs.append(executor.submit(CellJob(cell.argv)))
    return jobs


def _log_tail(job, lines: int = 20) -> list[str]:
    text = ""
    for getter in (job.stdout, job.stderr):
        try:
            text += getter() or ""
        except Exception:
            pass
    return [l for l in text.replace("\r", "\n").splitlines() if l.strip()][-lines:]
