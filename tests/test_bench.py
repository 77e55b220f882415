"""`lra bench`: what one measurement does, the records it writes, OOM and crash handling, the CPU
batch policy and the scaling sweep. Figures themselves (speed, memory) are shown by commands, not
asserted here; these tests check the harness's behaviour with real processes and real models."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

import tasks
from lra.core.step import benchmark_step as make_step
from lra.measurements import choose_batch, measure
from lra.scaling import fit_slope
from lra.cli import main
from lra.core.presets import make_config
from lra.core.records import REQUIRED_KEYS, read_records
from lra.core.step import Precision


def tiny_config(attention="softmax", batch=2, seq_len=64, **train):
    cfg = make_config("listops", "paper", attention=attention, device="cpu")
    cfg.preset = "bench"
    cfg.train.batch_size, cfg.data.seq_len = batch, seq_len
    for k, v in train.items():
        setattr(cfg.train, k, v)
    return cfg


def test_train_step_is_a_full_optimiser_step_and_eval_step_is_forward_only():
    cfg = tiny_config()
    device = torch.device("cpu")
    model, batch, step = make_step(cfg, "train", device, Precision("fp32", device), total_steps=10)
    assert batch["ids"].shape == (2, 1, 64) and batch["mask"].all()
    assert int(batch["ids"].min()) >= 1 and int(batch["ids"].max()) < tasks.get("listops").vocab_size
    before = [p.detach().clone() for p in model.parameters()]
    step()
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters())]
    assert all(changed), "every parameter must move in a training step (forward + backward + AdamW)"
    assert all(p.grad is None for p in model.parameters()), "gradients are cleared after the step"
    assert model.training

    model, _, step = make_step(cfg, "eval", device, Precision("fp32", device), total_steps=10)
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert not model.training
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(p.grad is None for p in model.parameters())


def test_measure_counts_timed_samples_only():
    cfg = tiny_config(batch=3)
    spec = {"config": cfg.to_dict(), "phase": "train", "warmup": 2, "steps": 3, "min_seconds": 0.0, "max_steps": 3,
            "max_step_seconds": None}
    out = measure(spec)
    assert out["status"] == "ok", out["error"]
    assert out["warmup_steps"] == 2 and out["timed_steps"] == 3
    assert out["throughput"] == pytest.approx(3 / out["step_seconds"], rel=1e-6)  # samples/s = batch / step time
    assert out["peak_memory_mb"] is not None and out["peak_memory_mb"] >= 0
    assert out["memory_method"].startswith("cpu_")
    assert out["num_params"] > 0 and out["env"]["device"] == "cpu"


def test_over_budget_point_gets_one_timed_step():
    spec = {"config": tiny_config().to_dict(), "phase": "eval", "warmup": 3, "steps": 5, "min_seconds": 10.0,
            "max_steps": 50, "max_step_seconds": 1e-9}
    out = measure(spec)
    assert out["status"] == "ok" and out["over_budget"]
    assert out["warmup_steps"] == 1 and out["timed_steps"] == 1


def test_cpu_batch_policy_is_recorded_and_the_same_for_every_attention():
    listops = tasks.get("listops")
    assert choose_batch(listops, 2048, None, "cuda", 16384) == (32, "paper batch")
    batch, reason = choose_batch(listops, 2048, None, "cpu", 16384)
    assert batch == 8 and "paper batch 32" in reason and "--cpu-tokens" in reason
    assert choose_batch(listops, 256, None, "cpu", 16384) == (32, "paper batch")  # fits: paper batch kept
    assert choose_batch(listops, 2048, 3, "cpu", 16384) == (3, "--batch-size 3")
    assert choose_batch(listops, 65536, None, "cpu", 16384)[0] == 1


def test_bench_cli_records_oom_and_crash_and_keeps_going(plugin, tmp_path, capsys):
    """One command, three attentions, each phase in its own process: softmax runs out of the memory
    allowed to it in training (a real allocation failure, recorded as oom), the plugin's linear
    attention fits, the crashing one is recorded as failed; the sweep measures all three."""
    results = tmp_path / "r"
    code = main(["bench", "--task", "listops", "--attention", "softmax", "toy-linear,toy-crash", "--batch-size", "4",
                 "--seq-len", "1024", "--warmup-steps", "1", "--steps", "1", "--min-seconds", "0",
                 "--cpu-memory-limit-mb", "200", "--device", "cpu", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert code == 1  # not everything was ok
    recs = {r["attention"]: r for r in read_records(results)}
    assert set(recs) == {"softmax", "toy-linear", "toy-crash"}
    for r in recs.values():
        assert all(k in r for k in REQUIRED_KEYS)
        assert r["kind"] == "bench" and r["preset"] == "bench"
        assert r["metrics"]["test_accuracy"] is None and r["metrics"]["best_val_accuracy"] is None
        b = r["bench"]
        assert (b["batch_size"], b["seq_len"], b["paper_batch_size"], b["paper_seq_len"]) == (4, 1024, 32, 2048)
        assert b["batch_reason"] == "--batch-size 4" and r["num_params"] > 0
        for phase in b["phases"].values():
            assert phase["isolation"] == "subprocess"
        assert r["config"]["train"]["batch_size"] == 4 and r["config"]["data"]["seq_len"] == 1024

    soft = recs["softmax"]
    assert soft["status"] == "oom" and soft["bench"]["phases"]["train"]["status"] == "oom"
    assert soft["metrics"]["train_throughput"] is None and soft["metrics"]["peak_memory_mb"] is None
    # the forward pass alone (no N x N matrices kept for backward) fits: its figures are kept
    assert soft["bench"]["phases"]["eval"]["status"] == "ok" and soft["metrics"]["eval_throughput"] > 0

    lin = recs["toy-linear"]
    assert lin["status"] == "ok"
    m = lin["metrics"]
    assert m["train_throughput"] > 0 and m["eval_throughput"] > 0 and 0 < m["peak_memory_mb"] < 200
    pids = {p["pid"] for p in lin["bench"]["phases"].values()}
    assert len(pids) == 2 and os.getpid() not in pids  # a fresh process per measurement
    assert "RLIMIT_DATA: 200 MiB" in lin["bench"]["phases"]["train"]["memory_limit"]

    crash = recs["toy-crash"]
    assert crash["status"] == "failed" and "deliberate failure" in crash["error"]
    assert "oom" in out and "toy-linear" in out


def test_one_process_per_task_survives_crashes_and_records_every_cell(plugin, tmp_path, capsys):
    """--isolation task (the CUDA default): the cells of a task share one fresh process; an error
    in a cell is recorded and the process goes on, a crash that ends the process is recorded as
    failed with its exit status and a fresh process takes the cells left."""
    results = tmp_path / "r"
    code = main(["bench", "--task", "listops", "--attention", "toy-linear,toy-exit,toy-crash,softmax",
                 "--isolation", "task", "--batch-size", "2", "--seq-len", "64", "--warmup-steps", "1", "--steps", "1",
                 "--min-seconds", "0", "--device", "cpu", "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert code == 1 and "4 cells in one fresh process" in out
    recs = {r["attention"]: r for r in read_records(results)}
    assert set(recs) == {"toy-linear", "toy-exit", "toy-crash", "softmax"}
    assert recs["toy-exit"]["status"] == "failed" and "exited with status 3" in recs["toy-exit"]["error"]
    assert recs["toy-crash"]["status"] == "failed" and "deliberate failure" in recs["toy-crash"]["error"]
    pid = {name: {p.get("pid") for p in r["bench"]["phases"].values()} for name, r in recs.items()}
    assert len(pid["toy-linear"]) == 1 and pid["toy-linear"] != pid["softmax"]  # a fresh process after the crash
    assert pid["toy-crash"] == pid["softmax"]  # an error inside a measurement does not end its process
    for name in ("toy-linear", "softmax"):
        assert recs[name]["status"] == "ok" and recs[name]["metrics"]["train_throughput"] > 0
        for phase in recs[name]["bench"]["phases"].values():
            assert phase["isolation"] == "one process per task" and phase["allocated_before_mb"] is None


def test_skip_existing_and_unknown_names(plugin, tmp_path, capsys):
    results = tmp_path / "r"
    args = ["bench", "--attention", "toy-linear", "--batch-size", "2", "--seq-len", "64", "--phases", "eval",
            "--warmup-steps", "1", "--steps", "1", "--min-seconds", "0", "--device", "cpu", "--results-dir", str(results)]
    assert main(args) == 0
    assert main(args + ["--skip-existing"]) == 0
    assert "recorded already" in capsys.readouterr().out
    assert len(read_records(results)) == 1
    assert main(["bench", "--attention", "softmx", "--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert "unknown attention 'softmx'" in err and "Valid attentions" in err
    assert main(["bench", "--attention", "softmax", "--phases", "backward", "--results-dir", str(results)]) == 2
    assert "--phases" in capsys.readouterr().err


def test_scaling_stops_at_the_budget_and_records_why(plugin, tmp_path, capsys):
    results = tmp_path / "r"
    code = main(["bench", "--scaling", "--attention", "toy-linear", "--lengths", "64,128,256", "--warmup-steps", "1",
                 "--steps", "1", "--min-seconds", "0", "--max-step-seconds", "1e-9", "--device", "cpu",
                 "--results-dir", str(results)])
    assert code == 0
    recs = read_records(results)
    assert len(recs) == 1  # over budget at the first length: the longer ones are not measured
    r = recs[0]
    assert r["kind"] == "scaling" and r["status"] == "ok" and r["bench"]["seq_len"] == 64
    assert r["scaling"]["skipped_lengths"] == [128, 256]
    assert "budget" in r["scaling"]["stop_reason"] and r["scaling"]["lengths"] == [64, 128, 256]
    assert r["bench"]["batch_size"] == 1 and list(r["bench"]["phases"]) == ["train"]
    assert "not measured: [128, 256]" in capsys.readouterr().out


def test_fit_slope_recovers_power_laws():
    n = [256, 512, 1024, 2048]
    assert fit_slope(n, [1e-6 * x ** 2 for x in n]) == pytest.approx(2.0)
    assert fit_slope(n, [3.0 * x for x in n]) == pytest.approx(1.0)
    assert fit_slope([256], [1.0]) is None
    noisy = [x ** 1.5 * (1.1 if i % 2 else 0.9) for i, x in enumerate(n)]
    assert 1.3 < fit_slope(n, noisy) < 1.7


@pytest.fixture
def pair_task():
    """A two-input task (like Retrieval), registered for this test only."""
    from tasks.base import _TASKS, Recipe, Smoke, Task

    class Pair(Task):
        name = "toy-pair"
        description = "two-input test task"
        max_len, vocab_size, num_classes, num_inputs = 64, 257, 2, 2
        recipe = Recipe(seq_len=64, batch_size=16, lr=1e-4, warmup=10, eval_every=10, eval_samples=None)
        smoke = Smoke(seq_len=64)

    yield _TASKS["toy-pair"]
    _TASKS.pop("toy-pair", None)


def test_two_input_tasks_are_measured_with_both_inputs(pair_task):
    batch, reason = choose_batch(pair_task, 64, None, "cpu", 1024)
    assert batch == 8 and "16 x 128 tokens" in reason  # both inputs count against the CPU budget
    cfg = make_config("toy-pair", "paper", attention="softmax", device="cpu")
    cfg.train.batch_size = batch
    device = torch.device("cpu")
    model, b, step = make_step(cfg, "train", device, Precision("fp32", device), total_steps=10)
    assert b["ids"].shape == (8, 2, 64) and model.num_inputs == 2
    step()
    out = measure({"config": cfg.to_dict(), "phase": "eval", "warmup": 1, "steps": 2, "min_seconds": 0.0,
                   "max_steps": 2})
    assert out["status"] == "ok" and out["throughput"] > 0
