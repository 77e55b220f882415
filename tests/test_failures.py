"""Failure cases: divergence, out-of-memory, crashes and concurrent writers never lose or corrupt a record."""

import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

import attentions
from attentions import AttentionBase
from lra import train
from lra.core.config import validate
from lra_base.errors import ConfigError
from lra.core.records import write_record
from tests.test_train import tiny_config


@pytest.fixture
def faulty():
    """An attention that misbehaves after a few training steps, the way a buggy variant would."""
    from dataclasses import dataclass

    @attentions.register("faulty")
    class Faulty(AttentionBase):
        """Softmax-free mixer that turns bad after `after` training forwards."""

        @dataclass
        class Options:
            after: int = 3
            fault: str = "nan"

        calls = 0

        def core(self, q, k, v, mask):
            if self.training:
                type(self).calls += 1
            if type(self).calls > self.options.after:
                if self.options.fault == "nan":
                    return v * float("nan")
                if self.options.fault == "oom":
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
                raise RuntimeError("an unexpected bug")
            return v

    yield Faulty
    attentions.unregister("faulty")


def faulty_config(listops_dir, tmp_path, fault):
    cfg = tiny_config(listops_dir, tmp_path, steps=20, eval_every=10)
    cfg.attention, cfg.attention_options = "faulty", {"after": 6, "fault": fault}  # 2 layers: step 4 turns bad
    return cfg


def test_nan_stops_the_run_as_diverged_with_a_diagnostic(listops_dir, tmp_path, faulty):
    faulty.calls = 0
    record = train.run(faulty_config(listops_dir, tmp_path, "nan"), progress=False)
    assert record["status"] == "diverged"
    assert "non-finite loss or gradients at step 4" in record["error"]
    assert "last finite training loss" in record["error"] and "faulty" in record["error"]
    assert "'after': 6" in record["error"]
    assert record["metrics"]["test_accuracy"] is None  # never a NaN that a table could average
    on_disk = json.loads(Path(record["path"]).read_text())
    assert on_disk["status"] == "diverged" and on_disk["steps"] == 4


def test_out_of_memory_is_recorded_as_oom(listops_dir, tmp_path, faulty):
    faulty.calls = 0
    record = train.run(faulty_config(listops_dir, tmp_path, "oom"), progress=False)
    assert record["status"] == "oom" and "out of memory" in record["error"]
    assert json.loads(Path(record["path"]).read_text())["status"] == "oom"


def test_a_crash_still_writes_a_failed_record_then_raises(listops_dir, tmp_path, faulty):
    faulty.calls = 0
    with pytest.raises(RuntimeError, match="an unexpected bug"):
        train.run(faulty_config(listops_dir, tmp_path, "bug"), progress=False)
    (path,) = (tmp_path / "runs").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and "an unexpected bug" in record["error"]


def _writer(args):
    results_dir, worker = args
    for i in range(25):
        write_record(results_dir, {
            "run_id": f"w{worker}-{i}", "task": "listops", "attention": "softmax", "attention_options": {},
            "preset": "smoke", "seed": i, "status": "ok", "metrics": {"test_accuracy": float(i)},
            "steps": i, "config": {"pad": "x" * 20000}, "env": {}, "created_at": "now"})
    return worker


def test_concurrent_writers_never_corrupt_or_lose_records(tmp_path):
    with mp.get_context("fork").Pool(4) as pool:
        assert sorted(pool.map(_writer, [(str(tmp_path), w) for w in range(4)])) == [0, 1, 2, 3]
    files = sorted((tmp_path / "runs").iterdir())
    assert len(files) == 100 and all(p.suffix == ".json" for p in files)  # no temporaries left
    for p in files:
        assert json.loads(p.read_text())["run_id"] == p.stem


@pytest.mark.parametrize("section,key,value,message", [
    ("train", "warmup", 500, "train.warmup must be in [0, train.steps=40]"),
    ("train", "lr", -1.0, "train.lr must be > 0"),
    ("model", "heads", 3, "must be divisible by model.heads (3)"),
    ("data", "seq_len", 0, "data.seq_len must be >= 1"),
    ("train", "eval_samples", 0, "train.eval_samples must be >= 1"),
])
def test_configuration_is_checked_before_any_work(listops_dir, tmp_path, section, key, value, message):
    cfg = tiny_config(listops_dir, tmp_path)
    setattr(getattr(cfg, section), key, value)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert message in str(err.value)
    with pytest.raises(ConfigError):
        train.run(cfg, progress=False)
    assert not (tmp_path / "runs").exists()


# --- storage: checked before any work, and a finished result is never lost --------------------


def blocked(tmp_path):
    """A folder no one can write, even root: a plain file stands where its parent should be."""
    (tmp_path / "a-file").write_text("in the way")
    return tmp_path / "a-file" / "results"


def test_an_unwritable_results_folder_stops_the_run_before_any_work(tmp_path):
    from lra_base.errors import StorageError
    from tests.test_train import tiny_config

    cfg = tiny_config(tmp_path / "no-data-here", blocked(tmp_path))  # data is never looked at
    with pytest.raises(StorageError) as err:
        train.run(cfg, progress=False)
    message = str(err.value)
    assert "\n" not in message and str(blocked(tmp_path) / "runs") in message and "--results-dir" in message


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_results_folder_stops_the_run_before_any_work(tmp_path):
    from lra_base.errors import StorageError
    from tests.test_train import tiny_config

    results = tmp_path / "results"
    results.mkdir()
    results.chmod(0o555)
    try:
        with pytest.raises(StorageError, match="cannot write the run's record"):
            train.run(tiny_config(tmp_path / "no-data-here", results), progress=False)
    finally:
        results.chmod(0o755)


def test_a_record_that_cannot_be_written_is_kept_elsewhere_and_said(tmp_path, capsys):
    from lra.core.records import record_path, saved_in

    record = {"run_id": "kept-1", "task": "listops", "attention": "softmax", "attention_options": {}, "preset": "smoke",
              "seed": 0, "status": "ok", "metrics": {"test_accuracy": 50.0}, "steps": 1, "config": {}, "env": {},
              "created_at": "now"}
    where = write_record(blocked(tmp_path), record)
    assert not saved_in(where, blocked(tmp_path)) and json.loads(Path(where).read_text())["run_id"] == "kept-1"
    err = capsys.readouterr().err
    assert str(record_path(blocked(tmp_path), "kept-1")) in err and str(where) in err
    Path(where).unlink()


def test_bench_and_report_check_their_folders_before_measuring_or_drawing(tmp_path, capsys):
    from lra.cli import main

    code = main(["bench", "--task", "listops", "--attention", "softmax", "--results-dir", str(blocked(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the measurements' records" in err and err.count("\n") == 1
    write_record(tmp_path / "mine", {
        "run_id": "r1", "task": "listops", "attention": "softmax", "attention_options": {}, "preset": "smoke",
        "seed": 0, "status": "ok", "metrics": {"test_accuracy": 50.0}, "steps": 1, "config": {}, "env": {},
        "created_at": "now", "kind": "train"})
    code = main(["report", "--results-dir", str(tmp_path / "mine"), "--out", str(blocked(tmp_path) / "board.md")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write the report" in err and "--out" in err and err.count("\n") == 1


def test_the_cache_can_live_apart_from_read_only_data(listops_dir, tmp_path):
    import tasks
    from lra_base.errors import StorageError

    task = tasks.get("listops")
    split = task.prepared(listops_dir, "val", cache_dir=tmp_path / "cache")
    assert split.meta["path"].startswith(str(tmp_path / "cache")) and len(split) == 64
    with pytest.raises(StorageError) as err:
        task.prepared(listops_dir, "val", {}, blocked(tmp_path))
    assert "--cache-dir" in str(err.value) and "LRA_CACHE_DIR" in str(err.value)


def test_output_piped_into_head_ends_without_a_traceback(tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    # more lines than a pipe holds (64 KiB), so the writer meets the closed pipe
    done = subprocess.run(f"{sys.executable} -m lra.cli train --task all --attention all --seeds 0-9 --dry-run "
                          f"--results-dir {tmp_path} | head -1",
                          shell=True, capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": str(root)})
    assert done.stdout.startswith("[grid]") and "Traceback" not in done.stderr, done.stderr
