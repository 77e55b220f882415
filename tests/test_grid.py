"""Grid runs: name expansion, the flags each cell gets, skipping what is recorded, and a real sweep in
which one cell crashes and the others still run."""

import argparse
import os

import pytest

import attentions
import tasks
from lra.args import add_run_arguments, config_from_args
from lra.cli import main
from lra_base.errors import ConfigError
from lra.core.names import canonical_names, expand_attentions, expand_tasks, parse_seeds
from lra.grid import passthrough
from lra.core.records import read_records


@pytest.fixture
def aliased(toy_with_presets):
    """An attention whose base name computes exactly what one of its presets does."""
    toy_with_presets("toyx")


def test_all_folds_aliases_and_lists_keep_order(aliased):
    names = expand_attentions("all")
    assert "toyx-a1" in names and "toyx-a2" in names and "toyx" not in names  # toyx == toyx-a1
    assert names == sorted(names) and "softmax" in names
    assert canonical_names()["toyx"] == "toyx-a1"
    assert expand_attentions(["toyx-a2,softmax", "toyx-a2"]) == ["toyx-a2", "softmax"]
    assert expand_tasks("all") == tasks.available()
    with pytest.raises(ConfigError, match="Valid attentions"):
        expand_attentions("softmax,nope")
    with pytest.raises(ConfigError, match="Valid tasks"):
        expand_tasks("listops,nope")


def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5, 0-1, 5") == [5, 0, 1]
    for bad in ("a", "3-1", "-1", ""):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_cells_get_every_other_flag():
    """Parsing a cell's own command line gives the configuration the sweep planned for it."""
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    argv = ["--task", "listops", "--attention", "softmax,all", "--seeds", "0,1", "--preset", "quick", "--steps", "30",
            "-o", "dropout=0.2", "--set", "model.dim=32", "--set", "train.lr=0.01", "--data-dir", "/x/data",
            "--no-progress", "--precision", "fp32", "--redo"]
    args = p.parse_args(argv)
    rest = passthrough(args)
    assert "--seeds" not in rest and "--redo" not in rest and "--task" not in rest
    for flag in ("--steps", "--option", "--set", "--data-dir", "--no-progress", "--precision", "--preset"):
        assert flag in rest
    cell = p.parse_args(["--task", "listops", "--attention", "softmax", "--seed", "1", *rest])
    planned = argparse.Namespace(**vars(args))
    planned.task, planned.attention, planned.seed = "listops", "softmax", 1
    assert config_from_args(cell).to_dict() == config_from_args(planned).to_dict()


def test_grid_runs_each_cell_in_its_own_process_and_skips_recorded_ones(plugin, listops_dir, tmp_path, capsys):
    results = tmp_path / "r"
    common = ["train", "--task", "listops", "--preset", "smoke", "--steps", "6", "--warmup", "2", "--eval-every", "6",
              "--batch-size", "16", "--seq-len", "128", "--set", "data.subdir=", "--set", "data.generate=false",
              "--data-dir", str(listops_dir), "--results-dir", str(results), "--no-progress"]
    code = main(common + ["--attention", "toy-crash,softmax", "--seeds", "0"])
    out = capsys.readouterr().out
    assert code == 1  # one cell failed; the sweep still ran the other
    recs = {r["attention"]: r for r in read_records(results)}
    assert recs["toy-crash"]["status"] == "failed" and "deliberate failure" in recs["toy-crash"]["error"]
    assert recs["softmax"]["status"] == "ok" and recs["softmax"]["steps"] == 6
    assert recs["softmax"]["config"]["data"]["seq_len"] == 128  # the sweep's flags reached the cell
    assert "[grid] summary" in out and "1 failed" in out and "1 ok" in out

    code = main(common + ["--attention", "toy-crash,softmax", "--seeds", "0", "--dry-run"])
    out = capsys.readouterr().out
    assert code == 0
    assert "softmax / seed 0: skip" in out and "toy-crash / seed 0: run" in out
    assert "1 already recorded" in out
    # a different setting is a different run: not satisfied by the record
    code = main(common[:6] + ["7"] + common[7:] + ["--attention", "softmax", "--seeds", "0", "--dry-run"])
    assert "softmax / seed 0: run" in capsys.readouterr().out
    # --redo runs recorded cells again
    code = main(common + ["--attention", "softmax", "--seeds", "0", "--dry-run", "--redo"])
    assert "softmax / seed 0: run" in capsys.readouterr().out


def test_grid_validates_every_cell_before_running(tmp_path, capsys):
    code = main(["train", "--task", "listops", "--attention", "softmax,sofmax", "--results-dir", str(tmp_path)])
    assert code == 2
    assert "unknown attention 'sofmax'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_packed_grid_prepares_data_once_and_runs_cells_side_by_side(plugin, tmp_path, capsys):
    """--jobs 2: the smoke set is generated once before the cells start (two cells generating it
    at once would collide), every cell still writes its own record, and output lines carry the
    cell's name."""
    results, data = tmp_path / "r", tmp_path / "data"
    code = main(["train", "--task", "listops", "--attention", "softmax,toy-linear", "--jobs", "2",
                 "--preset", "smoke", "--steps", "4", "--eval-every", "4", "--batch-size", "8", "--seq-len", "64",
                 "--set", 'data.generator={"train": 48, "val": 16, "test": 16, "min_length": 10, "max_length": 60}',
                 "--data-dir", str(data), "--results-dir", str(results)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("[lra] generating a listops dataset") == 1
    recs = {r["attention"]: r for r in read_records(results)}
    assert recs["softmax"]["status"] == recs["toy-linear"]["status"] == "ok"
    shared = max(1, (os.cpu_count() or 1) // 2)  # the cores shared out between the two
    assert recs["softmax"]["env"]["device_name"].endswith(f"{shared} threads)") or "OMP_NUM_THREADS" in os.environ
    assert "up to 2 at once" in out and "[listops/softmax/s0] [lra] training" in out
    assert "[listops/toy-linear/s0] [lra] training" in out and "2 ok" in out


def test_ctrl_c_reaches_every_packed_cell_which_checkpoints(listops_dir, tmp_path):
    """SIGINT to the grid alone: it forwards SIGTERM to both running cells, each writes its
    checkpoint, and the grid says how to continue."""
    import signal
    import subprocess
    import sys
    import time

    results = tmp_path / "r"
    cmd = [sys.executable, "-m", "lra.cli", "train", "--task", "listops", "--attention", "softmax,linear",
           "--jobs", "2", "--steps", "100000", "--eval-every", "100000", "--batch-size", "4", "--seq-len", "32",
           "--set", "data.subdir=", "--set", "data.generate=false", "--data-dir", str(listops_dir),
           "--results-dir", str(results)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if sum("[lra] training" in l for l in seen) == 2:
            break
    time.sleep(1.0)  # both inside their loops
    proc.send_signal(signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    assert out.count("sending SIGTERM") == 2
    assert len(list((results / "checkpoints").glob("*/last.pt"))) == 2, out
    assert "2 interrupted" in out and "--resume" in out
    assert not (results / "runs").exists() or not list((results / "runs").glob("*.json"))


def test_pool_refuses_stops_at_the_deadline_and_prefixes_output(capsys):
    """The pool under packed grids (lra/core/isolation.py): at most `width` at once, an admission
    refusal noted, the deadline stopping what runs (SIGTERM) and starting nothing more."""
    import sys
    import time

    from lra.core.isolation import Job, Pool, child_env, run_pool

    sleeper = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(60)"]
    jobs = [Job(f"j{i}", sleeper, child_env()) for i in range(4)]
    t0 = time.monotonic()
    stopped = run_pool(jobs, Pool(width=2, admit=lambda j: "no room" if j.name == "j1" else None,
                                  deadline=time.monotonic() + 3.0, label="t"))
    assert stopped == "deadline" and time.monotonic() - t0 < 30
    states = {j.name: (j.state, j.returncode, j.note) for j in jobs}
    assert states["j1"] == ("not started", None, "no room")
    assert states["j0"][:2] == states["j2"][:2] == ("finished", -15)  # two at once, both stopped
    assert states["j3"][0] == "not started" and "deadline" in states["j3"][2]
    out = capsys.readouterr().out
    assert "[j0] up" in out and "[j2] up" in out and out.count("sending SIGTERM") == 2


def test_sweep_local_jobs_submits_k_at_a_time():
    from types import SimpleNamespace

    from lra import sweep

    class FakeJob:
        def __init__(self, pool):
            self.polls, self.pool = 0, pool

        def done(self):
            self.polls += 1
            return self.polls > 2

    class FakeExecutor:
        def __init__(self):
            self.jobs, self.most = [], 0

        def submit(self, fn):
            self.jobs.append(FakeJob(self))
            self.most = max(self.most, sum(j.polls <= 2 for j in self.jobs))
            return self.jobs[-1]

    ex = FakeExecutor()
    cells = [SimpleNamespace(argv=["train"]) for _ in range(5)]
    out = sweep.submit(ex, cells, SimpleNamespace(jobs=2, executor="local", no_wait=False))
    assert len(out) == 5 and ex.most <= 2
def test_several_names_the_same_way_on_every_command():
    """Repeated, space-separated or comma-separated: `--attention a --attention b,c` is three names
    on train as on bench (plain nargs="+" kept only the last flag)."""
    from lra.cli import build_parser

    parser = build_parser()
    for command in (["train"], ["bench"]):
        args = parser.parse_args(command + ["--attention", "softmax", "pola-a3", "--attention", "linear,all",
                                            "--task", "text", "--task", "image"])
        assert expand_attentions(args.attention)[:3] == ["softmax", "pola-a3", "linear"]
        assert expand_tasks(args.task) == ["text", "image"]
    assert parser.parse_args(["train"]).task == ["listops"]  # the default, untouched by a later use
def test_variants_are_cells_with_their_options_and_skip_on_their_own(listops_dir, tmp_path, capsys):
    """Each variant is its own cell and run: its options reach the cell, and a record of one
    variant never satisfies another."""
    from lra.args import parse_variant
    from lra.core.identity import config_dict
    from lra.core.records import write_record
    from lra.grid import plan

    assert parse_variant("baseline") == [] and parse_variant("gate=false, dwc=false") == [("gate", "false"), ("dwc", "false")]
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_variant("gate")
    results = tmp_path / "r"
    common = ["train", "--task", "listops", "--attention", "pola-a3", "--seeds", "0", "--steps", "4", "--warmup", "1",
              "--eval-every", "4", "--batch-size", "8", "--seq-len", "64", "--set", "data.subdir=",
              "--set", "data.generate=false", "--data-dir", str(listops_dir), "--results-dir", str(results),
              "--no-progress", "-o", "dwc_kernel=3"]
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    cells = plan(p.parse_args(common[1:] + ["--variants", "baseline", "gate=false,gate_init=zeros"]))
    assert [c.config["attention_options"]["gate"] for c in cells] == [True, False]
    assert all(c.config["attention_options"]["dwc_kernel"] == 3 for c in cells)  # -o reaches every variant
    assert cells[1].argv[-4:] == ["--option", "gate=false", "--option", "gate_init=zeros"]
    assert config_dict(config_from_args(p.parse_args(cells[1].argv[1:]))) == cells[1].config  # what the cell runs
    with pytest.raises(ConfigError, match="gate_init"):
        plan(p.parse_args(common[1:] + ["--variants", "gate_init=xavier"]))

    # an ok record of the gate=false cell, as a finished run writes it
    write_record(results, {"run_id": "r1", "task": "listops", "attention": "pola-a3", "seed": 0, "preset": "smoke",
                           "attention_options": cells[1].config["attention_options"], "status": "ok", "metrics": {},
                           "steps": 4, "config": cells[1].config, "env": {}, "created_at": "", "kind": "train"})
    main(common + ["--variants", "baseline", "gate=false,gate_init=zeros", "--dry-run"])
    out = capsys.readouterr().out
    assert "pola-a3 [gate=false,gate_init=zeros] / seed 0: skip" in out and "pola-a3 [baseline] / seed 0: run" in out
