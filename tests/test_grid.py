"""Grid runs: name expansion, the flags each cell gets, skipping what is recorded, and a real sweep in
which one cell crashes and the others still run."""

import argparse

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
