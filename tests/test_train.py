"""The training loop and the result record, on a small generated ListOps set (CPU, seconds)."""

import json
import math

import pytest

from lra import train
from lra.core.presets import make_config
from lra.core.records import METRIC_KEYS, REQUIRED_KEYS


def tiny_config(data_dir, results_dir, **train_overrides):
    cfg = make_config("listops", "smoke", data_dir=str(data_dir), results_dir=str(results_dir), attention="softmax")
    cfg.data.subdir, cfg.data.generate, cfg.data.seq_len = "", False, 128
    cfg.model.dropout = 0.0
    t = cfg.train
    t.steps, t.batch_size, t.lr, t.warmup, t.eval_every, t.timing_warmup = 40, 16, 3e-3, 4, 20, 2
    for k, v in train_overrides.items():
        setattr(t, k, v)
    return cfg


@pytest.fixture(scope="module")
def finished(listops_dir, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    cfg = tiny_config(listops_dir, results)
    return cfg, train.run(cfg, progress=False)


def test_a_few_dozen_steps_lower_the_loss(finished):
    _, record = finished
    losses = [loss for _, loss in record["history"]["train"]]
    assert len(losses) == 4
    assert losses[-1] < losses[0] - 0.05, losses
    assert losses[0] == pytest.approx(math.log(10), abs=0.3)  # starts near chance for 10 classes


def test_record_has_every_contract_key_with_sane_values(finished):
    cfg, record = finished
    path = cfg.results_dir + f"/runs/{record['run_id']}.json"
    on_disk = json.load(open(path))
    for key in REQUIRED_KEYS:
        assert key in on_disk, key
    m = on_disk["metrics"]
    for key in METRIC_KEYS:
        if key == "peak_memory_mb" and m[key] is None:  # a test process reuses memory earlier tests freed
            assert "not measurable here" in m["peak_memory_note"]
            continue
        assert m[key] is not None, key
    assert on_disk["status"] == "ok" and on_disk["steps"] == 40
    assert 0 <= m["test_accuracy"] <= 100 and 0 <= m["best_val_accuracy"] <= 100
    assert m["train_throughput"] > 0 and m["eval_throughput"] > 0 and (m["peak_memory_mb"] or 1) > 0
    assert on_disk["attention"] == "softmax" and on_disk["attention_options"] == {"dropout": 0.1, "impl": "fast"}
    assert on_disk["config"]["train"]["steps"] == 40 and on_disk["config"]["data"]["seq_len"] == 128
    assert set(on_disk["env"]) >= {"device", "device_name", "dtype", "torch", "cuda", "git_sha"}
    assert on_disk["env"]["device"] == "cpu" and on_disk["env"]["dtype"] == "float32"
    assert on_disk["num_params"] > 0
    assert [s for s, _ in on_disk["history"]["eval"]] == [20, 40]
    assert m["best_val_accuracy"] == max(a for _, a in on_disk["history"]["eval"])


def test_no_stray_files_left_in_the_results_folder(finished):
    cfg, record = finished
    import pathlib

    runs = list((pathlib.Path(cfg.results_dir) / "runs").iterdir())
    assert [p.name for p in runs] == [record["run_id"] + ".json"]


def test_same_seed_same_metrics(listops_dir, tmp_path, finished):
    _, first = finished
    again = train.run(tiny_config(listops_dir, tmp_path), progress=False)
    assert again["history"] == first["history"]
    assert again["metrics"]["test_accuracy"] == first["metrics"]["test_accuracy"]


def test_batch_larger_than_the_dataset_is_a_clear_error(listops_dir, tmp_path):
    from lra_base.errors import ConfigError

    cfg = tiny_config(listops_dir, tmp_path, batch_size=1000)
    with pytest.raises(ConfigError, match="fewer than the batch size"):
        train.run(cfg, progress=False)


@pytest.mark.parametrize("steps,warmup", [(1, 0), (2, 1), (3, 0), (10, 1), (10, 10), (50, 5)])
def test_schedule_is_defined_for_every_warmup_and_ends_near_zero(steps, warmup):
    import torch

    from lra.core.config import TrainConfig
    from lra.core.step import make_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(opt, TrainConfig(steps=steps, warmup=warmup, lr=1e-3))
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert all(0 < lr <= 1e-3 + 1e-12 for lr in lrs)
    if steps >= 3:
        assert max(lrs) == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-3 / 25)
        assert lrs[-1] < lrs[0]  # decays to (almost) nothing by the end


def test_a_ten_step_run_from_the_command_line(listops_dir, tmp_path, capsys):
    from lra.cli import main

    code = main(["train", "--attention", "softmax", "--data-dir", str(listops_dir), "--results-dir", str(tmp_path),
                 "--set", "data.subdir=", "--set", "data.generate=false", "--seq-len", "64", "--steps", "10",
                 "--no-progress"])
    assert code == 0 and "ok" in capsys.readouterr().out


def test_an_extended_schedule_continues_as_one_planned_for_the_new_length():
    """`--resume --steps N`: the schedule is rebuilt for N and set to the saved step; from there the
    learning rate and beta1 are those of a run planned for N steps (docs/reliability.md)."""
    import torch

    from lra.core.config import TrainConfig
    from lra.core.step import continue_schedule, make_scheduler

    def stepped(steps, upto):
        opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        sched = make_scheduler(opt, TrainConfig(steps=steps, warmup=10, lr=1e-3))
        seen = []
        for _ in range(upto):
            seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
            opt.step()
            sched.step()
        return opt, sched, seen

    short_opt, _, short = stepped(100, 60)
    _, _, planned = stepped(200, 200)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(opt, TrainConfig(steps=200, warmup=10, lr=1e-3))
    opt.load_state_dict(short_opt.state_dict())
    continue_schedule(sched, 60)
    extended = []
    for _ in range(60, 200):
        extended.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"][0]))
        opt.step()
        sched.step()
    assert extended == planned[60:]  # the same arithmetic: equal, not close
    assert extended[0][0] > short[-1][0]  # past the warm-up the rate steps up to the longer decay


def test_a_sequence_length_that_cuts_examples_is_counted_said_and_recorded(listops_dir, tmp_path, capsys):
    record = train.run(tiny_config(listops_dir, tmp_path, steps=2, eval_every=2, warmup=1), progress=False)
    assert all(record["data"][s]["cut_by_seq_len"] == 0 for s in ("train", "val", "test"))  # 128 holds them
    cfg = tiny_config(listops_dir, tmp_path, steps=2, eval_every=2, warmup=1)
    cfg.data.seq_len = 50
    record = train.run(cfg, progress=False)
    cut = record["data"]["train"]
    assert 0 < cut["cut_by_seq_len"] <= cut["examples"] and cut["longest"] > 50 and cut["seq_len"] == 50
    assert f"listops/train: sequence length 50 cuts {cut['cut_by_seq_len']} of {cut['examples']}" in capsys.readouterr().out


def in_fresh_process(code: str, extra_env: dict | None = None) -> None:
    """Run `code` in a new interpreter: a resident-set measurement in the test process would see
    memory that other tests' threads free meanwhile."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    from lra.core.env import MALLOC_SETTINGS

    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_SETTINGS}  # malloc as it comes, unless asked
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=root, capture_output=True, text=True,
                         timeout=120, env={**env, **(extra_env or {}), "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]


def test_peak_memory_that_cannot_be_measured_is_said_not_a_tiny_number():
    in_fresh_process("""
        import numpy as np
        import torch

        from lra.core.measure import PeakMemory

        assert PeakMemory(torch.device("cpu")).reported() == (None, "not measured: no training step ran in this process")
        memory = PeakMemory(torch.device("cpu"))
        memory.start()
        big = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
        peak, why = memory.reported()
        assert why is None and peak > 32, (peak, why)
    """)


def test_cpu_peak_memory_is_not_told_under_malloc_settings_and_records_carry_them():
    """With glibc told to keep freed memory (MALLOC_MMAP_MAX_=0 and a trim threshold past any heap,
    docs/pola-1d.md), a step reuses pages the process already holds: the resident set no longer
    follows the tensors, so no CPU peak is told, the reason names the settings, and the record's
    env carries them; without them, env says None and the peak is measured."""
    check = """
        import numpy as np
        import torch

        from lra.core.env import environment
        from lra.core.measure import PeakMemory

        memory = PeakMemory(torch.device("cpu"))
        memory.start()
        big = np.ones(64 * 2**20, dtype=np.uint8)
        peak, why = memory.reported()
        malloc = environment(torch.device("cpu"), torch.float32)["malloc"]
        if {kept}:
            assert peak is None and "MALLOC_MMAP_MAX_=0" in why and "MALLOC_TRIM_THRESHOLD_" in why, why
            assert malloc == {{"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967295"}}, malloc
        else:
            assert why is None and peak > 32 and malloc is None, (peak, why, malloc)
    """
    in_fresh_process(check.format(kept=True), {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967295"})
    in_fresh_process(check.format(kept=False))


def test_garbage_freed_during_a_cpu_measurement_does_not_hide_its_peak():
    """Cycles left by earlier work (a previous run in the same process) freed mid-measurement lower
    the resident set below the start; PeakMemory collects them before it starts."""
    in_fresh_process("""
        import gc

        import numpy as np
        import torch

        from lra.core.measure import PeakMemory

        class Holder:
            pass

        gc.disable()
        for _ in range(3):
            a, b = Holder(), Holder()
            a.other, b.other, a.data = b, a, np.ones(100 * 2**20, dtype=np.uint8)
            del a, b
        gc.enable()
        memory = PeakMemory(torch.device("cpu"))
        memory.start()
        gc.collect()  # what a collection during the measured steps does
        big = np.ones(64 * 2**20, dtype=np.uint8)
        peak, why = memory.reported()
        assert why is None and peak > 32, (peak, why)
    """)
