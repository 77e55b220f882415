"""Data parallel training with torchrun: two CPU processes (gloo) against one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def train_args(data_dir, results_dir):
    return ["--task", "listops", "--attention", "softmax", "--preset", "smoke", "--data-dir", str(data_dir),
            "--results-dir", str(results_dir), "--set", "data.subdir=", "--set", "data.generate=false",
            "--seq-len", "128", "--steps", "30", "--batch-size", "16", "--eval-every", "10", "--warmup", "3",
            "--no-progress", "--set", "model.dropout=0", "-o", "dropout=0"]  # dropout masks differ per rank


def records(results_dir):
    return [json.loads(p.read_text()) for p in (Path(results_dir) / "runs").glob("*.json")]


def test_two_gloo_processes_follow_the_single_process_loss_curve(listops_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, str(ROOT / "run_lra.py"), *train_args(listops_dir, tmp_path / "one")],
                            env=env, capture_output=True, text=True, cwd=ROOT)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "run_lra.py"), *train_args(listops_dir, tmp_path / "two")],
                         env=env, capture_output=True, text=True, cwd=ROOT)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("test acc %") == 1  # one summary, from rank 0

    (one,) = records(tmp_path / "one")
    two_all = records(tmp_path / "two")
    assert len(two_all) == 1  # only rank 0 writes
    two = two_all[0]
    assert two["env"]["world_size"] == 2 and one["env"]["world_size"] == 1
    steps = [s for s, _ in one["history"]["train"]]
    assert steps == [s for s, _ in two["history"]["train"]] == [10, 20, 30]
    for (_, a), (_, b) in zip(one["history"]["train"], two["history"]["train"]):
        assert b == pytest.approx(a, rel=1e-5)
    assert one["history"]["eval"] == two["history"]["eval"]
    assert one["metrics"]["test_accuracy"] == two["metrics"]["test_accuracy"]


def test_batch_not_divisible_by_the_process_count_is_refused(listops_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = train_args(listops_dir, tmp_path)
    args[args.index("--batch-size") + 1] = "15"
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "run_lra.py"), *args], env=env, capture_output=True, text=True, cwd=ROOT)
    assert ddp.returncode != 0
    assert "train.batch_size 15 must be divisible by the 2 processes" in ddp.stderr


def test_resume_under_ddp_after_sigterm(listops_dir, tmp_path):
    """torchrun forwards SIGTERM to its workers; rank 0 checkpoints; a resumed torchrun run finishes
    on the single-process curve."""
    import signal
    import time

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = train_args(listops_dir, tmp_path / "two")
    args[args.index("--steps") + 1] = "200"
    args += ["--checkpoint-every", "1000"]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                str(ROOT / "run_lra.py")]
    proc = subprocess.Popen(launcher + args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stdout:
        if line.startswith("[lra] training"):
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert "SIGTERM received at step" in err
    (last,) = (tmp_path / "two" / "checkpoints").glob("*/last.pt")
    assert not (tmp_path / "two" / "runs").exists()

    resumed = subprocess.run(launcher + args + ["--resume"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    single_args = train_args(listops_dir, tmp_path / "one")
    single_args[single_args.index("--steps") + 1] = "200"
    single = subprocess.run([sys.executable, str(ROOT / "run_lra.py"), *single_args], env=env, cwd=ROOT,
                            capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    (one,), (two,) = records(tmp_path / "one"), records(tmp_path / "two")
    assert len(one["history"]["train"]) == len(two["history"]["train"]) == 20
    for (sa, a), (sb, b) in zip(one["history"]["train"], two["history"]["train"]):
        assert sa == sb and b == pytest.approx(a, rel=1e-4)
    assert [s for s, _ in one["history"]["eval"]] == [s for s, _ in two["history"]["eval"]]
