"""The command line: errors a user can meet print one clear message, never a traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

from lra.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv,expected", [
    (["--task", "listopz"], ["unknown task 'listopz'", "did you mean 'listops'", "Valid tasks:"]),
    (["--attention", "sofmax"], ["unknown attention 'sofmax'", "Valid attentions:", "softmax"]),
    (["--preset", "papr"], ["unknown preset 'papr'", "smoke, quick, paper"]),
    (["--attention", "softmax", "-o", "dropout_p=0.2"], ["has no option 'dropout_p'", "Valid options:"]),
    (["--attention", "softmax", "-o", "impl=flash"], ["must be one of ['fast', 'reference']"]),
    (["--set", "train.lrr=1"], ["unknown setting 'train.lrr'", "did you mean 'lr'"]),
    (["--set", "model.dim=65"], ["model.dim (65) must be divisible by model.heads (2)"]),
])
def test_bad_names_and_options(capsys, tmp_path, argv, expected):
    code, out, err = run_cli(capsys, "train", "--data-dir", str(tmp_path), "--results-dir", str(tmp_path), *argv)
    assert code == 2
    for text in expected:
        assert text in err
    assert "Traceback" not in err


def test_data_dir_without_listops_files(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--preset", "quick", "--attention", "softmax", "--data-dir",
                           str(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert code == 2
    assert str(tmp_path / "lra_release" / "listops-1000" / "basic_train.tsv") in err
    assert "lra data generate listops" in err and "lra data download listops" in err
    assert not (tmp_path / "r" / "runs").exists()  # nothing ran, so no record


def test_malformed_tsv_through_the_cli(capsys, tmp_path):
    folder = tmp_path / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text("Source\tTarget\n( [MAX 1 ] )\t1\n( [MIN 2 ] )\n")
    code, _, err = run_cli(capsys, "train", "--preset", "quick", "--attention", "softmax", "--data-dir", str(tmp_path))
    assert code == 2 and "basic_train.tsv:3: expected 2 tab-separated fields" in err


def test_list_shows_attentions_tasks_and_presets(capsys):
    code, out, _ = run_cli(capsys, "list", "--options")
    assert code == 0
    for text in ("softmax", "O(N^2", "listops", "smoke, quick, paper", "impl:"):
        assert text in out


def test_run_lra_is_lra_train_in_a_real_process(tmp_path):
    """The entry point itself: exit status and message, no traceback, from a fresh interpreter."""
    proc = subprocess.run([sys.executable, str(ROOT / "run_lra.py"), "--task", "nope", "--data-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown task 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_data_generate_and_verify(capsys, tmp_path):
    import json

    code, out, _ = run_cli(capsys, "data", "generate", "listops", "--data-dir", str(tmp_path), "--train", "40",
                           "--val", "8", "--test", "8", "--set", "min_length=10", "--set", "max_length=80")
    assert code == 0 and "listops-1000" in out
    code, out, _ = run_cli(capsys, "data", "verify", "listops", "--data-dir", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 0 and report["ok"]
    assert {s: v["count"] for s, v in report["splits"].items()} == {"train": 40, "val": 8, "test": 8}
    assert sum(report["splits"]["train"]["labels"].values()) == 40
    assert 10 < report["splits"]["train"]["lengths"]["min"] and report["splits"]["train"]["lengths"]["max"] < 80
    code, out, _ = run_cli(capsys, "data", "verify", "listops", "--data-dir", str(tmp_path / "empty"))
    assert code == 1 and "BROKEN" in out
