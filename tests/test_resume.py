"""Checkpoints and exact resumption, in real subprocesses killed with real signals."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lra.core import checkpoint as ckpt
from lra import train
from lra_base.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
STEPS = 60


def command(data_dir, results_dir, *extra):
    return [sys.executable, "-m", "lra.cli", "train", "--task", "listops", "--attention", "softmax",
            "--preset", "smoke", "--data-dir", str(data_dir), "--results-dir", str(results_dir),
            "--set", "data.subdir=", "--set", "data.generate=false", "--seq-len", "128", "--steps", str(STEPS),
            "--batch-size", "16", "--eval-every", "20", "--warmup", "5", "--no-progress", *extra]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def only_record(results_dir) -> dict:
    records = list((Path(results_dir) / "runs").glob("*.json"))
    assert len(records) == 1, records
    return json.loads(records[0].read_text())


def outcome(record) -> dict:
    """What must be identical bit for bit between an uninterrupted and a resumed run."""
    m = record["metrics"]
    return {"history": record["history"], "test": m["test_accuracy"], "best": m["best_val_accuracy"],
            "best_step": m["best_step"], "loss": m["final_train_loss"], "steps": record["steps"]}


@pytest.fixture(scope="module")
def uninterrupted(listops_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("straight")
    subprocess.run(command(listops_dir, results, "--checkpoint-every", "7"), check=True, env=env(),
                   capture_output=True, cwd=ROOT)
    return only_record(results)


def test_sigkill_then_resume_ends_exactly_as_an_uninterrupted_run(listops_dir, tmp_path, uninterrupted):
    cmd = command(listops_dir, tmp_path, "--checkpoint-every", "7")
    proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = None
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        found = list(tmp_path.glob("checkpoints/*/last.pt"))
        if found and ckpt.load(found[0])["state"]["step"] >= 14:
            last = found[0]
            break
        time.sleep(0.05)
    time.sleep(0.15)  # somewhere between two checkpoints
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    assert last is not None and not (tmp_path / "runs").exists()  # killed: no record yet
    killed_at = ckpt.load(last)["state"]["step"]
    assert 0 < killed_at < STEPS

    done = subprocess.run(cmd + ["--resume"], env=env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"at step {killed_at}" in done.stdout
    resumed = only_record(tmp_path)
    assert outcome(resumed) == outcome(uninterrupted)
    assert not last.exists()  # a finished run leaves no resumable state behind
    assert (last.parent / "best.pt").exists()


def test_sigterm_writes_a_checkpoint_and_the_run_resumes(listops_dir, tmp_path, uninterrupted):
    cmd = command(listops_dir, tmp_path, "--checkpoint-every", "1000")  # no periodic checkpoint
    proc = subprocess.Popen(cmd, env=env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("[lra] training"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped: SIGTERM received at step" in err and "--resume" in err
    (last,) = tmp_path.glob("checkpoints/*/last.pt")
    step = ckpt.load(last)["state"]["step"]
    assert 0 < step < STEPS
    done = subprocess.run(cmd + ["--resume"], env=env(), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert outcome(only_record(tmp_path)) == outcome(uninterrupted)


def test_resume_refuses_a_checkpoint_of_another_configuration(listops_dir, tmp_path):
    from tests.test_train import tiny_config

    cfg = tiny_config(listops_dir, tmp_path, steps=12, eval_every=6)
    state_dir = ckpt.directory(cfg)
    # leave a checkpoint behind as an interrupted run would
    train.run(cfg, checkpoint_every=6, progress=False)
    torch.save({"run_id": "x", "config": cfg.to_dict(), "state": {"step": 6}}, state_dir / "last.pt")
    changed = tiny_config(listops_dir, tmp_path, steps=12, eval_every=6, lr=1e-3)
    with pytest.raises(ConfigError) as err:
        train.run(changed, resume=True, progress=False)
    assert "train.lr: checkpoint 0.003, now 0.001" in str(err.value)
    assert "without --resume" in str(err.value)


def test_resume_without_a_checkpoint_starts_afresh(listops_dir, tmp_path, capsys):
    from tests.test_train import tiny_config

    record = train.run(tiny_config(listops_dir, tmp_path, steps=8, eval_every=4), resume=True, progress=False)
    assert record["status"] == "ok" and "starting afresh" in capsys.readouterr().out


# --- safe resumes: never overwrite unfinished work, extend a run, name a damaged file -----------


def test_an_unfinished_checkpoint_is_refused_without_resume_and_restart_starts_over(listops_dir, tmp_path):
    from tests.test_train import tiny_config

    cfg = tiny_config(listops_dir, tmp_path, steps=12, eval_every=6)
    last = ckpt.directory(cfg) / "last.pt"
    last.parent.mkdir(parents=True)
    torch.save({"run_id": "x", "config": cfg.to_dict(), "state": {"step": 6}}, last)  # as an interrupted run leaves it
    with pytest.raises(ConfigError) as err:
        train.run(cfg, checkpoint_every=6, progress=False)
    message = str(err.value)
    assert str(last) in message and "at step 6 of 12" in message and "--resume" in message and "--restart" in message
    assert last.exists() and not (tmp_path / "runs").exists()  # nothing overwritten, nothing run
    record = train.run(cfg, checkpoint_every=6, progress=False, restart=True)
    assert record["status"] == "ok" and record["steps"] == 12 and not last.exists()


def test_resume_with_more_steps_extends_a_finished_run_under_a_new_record(listops_dir, tmp_path, capsys):
    from tests.test_train import tiny_config

    first = train.run(tiny_config(listops_dir, tmp_path, steps=12, eval_every=6), checkpoint_every=6, progress=False)
    folder = ckpt.directory(tiny_config(listops_dir, tmp_path))
    assert (folder / "final.pt").exists() and not (folder / "last.pt").exists()
    longer = train.run(tiny_config(listops_dir, tmp_path, steps=20, eval_every=6), resume=True, checkpoint_every=6,
                       progress=False)
    assert longer["status"] == "ok" and longer["steps"] == 20 and longer["run_id"] != first["run_id"]
    assert longer["extensions"] == [{"at_step": 12, "from_steps": 12, "to_steps": 20, "from_run": first["run_id"]}]
    assert [s for s, _ in longer["history"]["eval"]] == [6, 12, 18, 20]
    assert longer["history"]["eval"][:2] == first["history"]["eval"]
    assert len(list((tmp_path / "runs").glob("*.json"))) == 2  # the shorter run's record stays
    assert "extending it from 12 to 20 steps" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="finished at step 20"):
        train.run(tiny_config(listops_dir, tmp_path, steps=20, eval_every=6), resume=True, checkpoint_every=6,
                  progress=False)
    with pytest.raises(ConfigError, match="ends before it"):
        train.run(tiny_config(listops_dir, tmp_path, steps=15, eval_every=6), resume=True, checkpoint_every=6,
                  progress=False)


@pytest.mark.parametrize("damage", ["cut short", "garbage"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_fix(listops_dir, tmp_path, damage):
    from lra_base.errors import StorageError
    from tests.test_train import tiny_config

    cfg = tiny_config(listops_dir, tmp_path, steps=12, eval_every=6)
    train.run(cfg, checkpoint_every=6, progress=False)
    final = ckpt.directory(cfg) / "final.pt"
    data = final.read_bytes()
    last = final.with_name("last.pt")
    last.write_bytes(data[: len(data) // 2] if damage == "cut short" else b"1 2 3 not a checkpoint\n" * 40)
    for resume in (True, False):
        with pytest.raises(StorageError) as err:
            train.run(cfg, resume=resume, checkpoint_every=6, progress=False)
        message = str(err.value)
        assert "\n" not in message and str(last) in message and f"rm {last}" in message
