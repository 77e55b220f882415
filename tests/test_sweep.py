"""`lra sweep` through submitit's local executor: jobs are real processes on this machine."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit")

from lra.cli import main  # noqa: E402
from tests import _toy_plugin  # noqa: E402

TINY = ["--set", "data.subdir=", "--set", "data.generate=false", "--seq-len", "64", "--steps", "20",
        "--eval-every", "10", "--no-progress"]


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def records(results_dir):
    return sorted((json.loads(p.read_text()) for p in (Path(results_dir) / "runs").glob("*.json")),
                  key=lambda r: (r["attention"], r["seed"]))


def test_sweep_runs_each_cell_as_a_job_skips_recorded_ones_and_reports_failures(listops_dir, tmp_path, capsys,
                                                                               monkeypatch):
    plugin = _toy_plugin.install(tmp_path / "plugin")
    _toy_plugin.load(plugin)
    monkeypatch.setenv("PYTHONPATH", str(plugin))  # the jobs' interpreters find the plugin too
    base = ["sweep", "--executor", "local", "--task", "listops", "--data-dir", str(listops_dir),
            "--results-dir", str(tmp_path / "r"), *TINY]

    assert main(base + ["--attention", "softmax", "--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert [(r["attention"], r["seed"], r["status"]) for r in records(tmp_path / "r")] == [
        ("softmax", 0, "ok"), ("softmax", 1, "ok")]
    assert "2 ok" in out

    # again, with one more cell that crashes: the two recorded cells are skipped, the crash reported
    assert main(base + ["--attention", "softmax,toy-crash", "--seeds", "0,1"]) == 1
    out = capsys.readouterr().out
    assert "4 cells (2 already recorded, skipped), 2 to submit" in out
    assert "toy-crash: deliberate failure in the attention core" in out  # the tail of the failed job's log
    statuses = [(r["attention"], r["seed"], r["status"]) for r in records(tmp_path / "r")]
    assert statuses.count(("softmax", 0, "ok")) == 1 and ("toy-crash", 1, "failed") in statuses


def test_a_preempted_job_checkpoints_is_requeued_and_resumes(listops_dir, tmp_path):
    """submitit's local executor delivers the pre-emption signal as SLURM would; the job's child
    writes its checkpoint, the job is requeued and the run continues from that checkpoint."""
    import argparse

    from lra.sweep import CellJob, make_executor

    results = tmp_path / "r"
    argv = ["train", "--task", "listops", "--attention", "softmax", "--data-dir", str(listops_dir),
            "--results-dir", str(results), *TINY, "--resume"]
    argv[argv.index("--steps") + 1] = "400"
    argv[argv.index("--eval-every") + 1] = "1000"  # no evaluation checkpoint: only the signal makes one
    args = argparse.Namespace(executor="local", log_dir=str(tmp_path / "logs"), results_dir=str(results),
                              timeout_min=30, gpus=None, cpus=None, mem_gb=None, partition=None, parallel=None,
                              slurm=[])
    job = make_executor(args).submit(CellJob(argv))
    deadline = time.time() + 120
    while "[lra] training" not in (job.stdout() or "") and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    # What SLURM does before a pre-emption or time-out: SIGUSR2 to the job's task process (the
    # child of submitit's local controller). (submitit's LocalJob._interrupt signals the controller
    # itself, which has no handler for it, so it cannot stand in here.)
    (task,) = children(int(job.job_id))
    os.kill(task, signal.SIGUSR2)
    result = job.result()
    assert result["returncode"] == 0
    log = job.stdout() + job.stderr()
    assert "SIGTERM received at step" in log and "Requeued job" in log, log[-3000:]
    assert "resuming" in log and "at step" in log, log[-3000:]
    (record,) = records(results)
    assert record["status"] == "ok" and record["steps"] == 400
