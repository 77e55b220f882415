"""`lra data`: generate, prepare, verify (its JSON contract and exit status), throughput, examples."""

import json

import pytest

from lra import cli


def run(capsys, *argv):
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_verify_json_contract_for_generated_listops(listops_dir, capsys):
    code, out, _ = run(capsys, "data", "verify", "listops", "--data-dir", str(listops_dir), "--json")
    assert code == 0
    report = json.loads(out)
    assert set(report["splits"]) == {"train", "val", "test"}
    for name, n in (("train", 320), ("val", 64), ("test", 64)):
        s = report["splits"][name]
        assert s["count"] == n and sum(s["labels"].values()) == n
        assert all(k.isdigit() and 0 <= int(k) <= 9 for k in s["labels"])
        assert {"min", "mean", "median", "max"} <= set(s["lengths"]) and "skipped" in s


def test_generate_and_verify_pathfinder_through_the_cli(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "generate", "pathfinder", "--data-dir", str(tmp_path), "--images", "20",
                       "--per-batch", "10", "--workers", "1", "--difficulty", "curv_baseline")
    assert code == 0 and "images/s" in out
    code, out, _ = run(capsys, "data", "verify", "pathfinder", "--data-dir", str(tmp_path), "--json",
                       "--task-option", "difficulty=curv_baseline")
    report = json.loads(out)
    assert code == 0 and report["ok"]
    assert {k: v["count"] for k, v in report["splits"].items()} == {"train": 16, "val": 2, "test": 2}
    assert sum(sum(v["labels"].values()) for v in report["splits"].values()) == 20
    assert report["splits"]["train"]["lengths"]["min"] == 1024
    code, out, _ = run(capsys, "data", "verify", "pathfinder", "--data-dir", str(tmp_path),
                       "--task-option", "difficulty=curv_baseline")
    assert code == 0 and "OK" in out and "train" in out


def test_verify_exits_non_zero_on_a_broken_dataset(listops_dir, tmp_path, capsys):
    import shutil

    shutil.copytree(listops_dir / "lra_release", tmp_path / "lra_release")
    (tmp_path / "lra_release/listops-1000/basic_test.tsv").unlink()
    code, out, _ = run(capsys, "data", "verify", "listops", "--data-dir", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert report["splits"]["test"]["count"] == 0 and "basic_test.tsv" in report["splits"]["test"]["error"]
    assert report["splits"]["train"]["count"] == 320
    code, out, _ = run(capsys, "data", "verify", "listops", "--data-dir", str(tmp_path))
    assert code == 1 and "BROKEN" in out


def test_prepare_and_throughput_report_every_task_with_data(listops_dir, capsys):
    code, out, _ = run(capsys, "data", "prepare", "listops", "--data-dir", str(listops_dir))
    assert code == 0 and out.count("examples in") == 3
    code, out, _ = run(capsys, "data", "throughput", "listops", "--data-dir", str(listops_dir), "--batches", "2",
                       "--workers", "0", "--train-steps", "0", "--json")
    rates = json.loads(out)["listops"]
    assert rates["batch_size"] == 32 and rates["seq_len"] == 2048 and rates["loader_w0"] > 0
    code, out, _ = run(capsys, "data", "throughput", "--data-dir", str(listops_dir), "--batches", "2",
                       "--workers", "0", "--train-steps", "0")
    assert code == 0 and "loader samples/s (0 workers)" in out and "listops" in out
    assert "text: skipped" in out  # no data for it here: said so, not an error


def test_throughput_times_the_paper_model_too(listops_dir, capsys):
    from lra.data_cli import train_rate
    import numpy as np

    import tasks
    from lra.core.data import BatchView

    task = tasks.get("listops")
    batch = BatchView(task.prepared(listops_dir, "val"), 64)[np.arange(4)]
    assert train_rate(task, batch, "softmax", steps=1) > 0


def test_throughput_caps_the_training_batch_like_bench(listops_dir, capsys):
    # ListOps' paper batch is 32 x 2048 tokens: over the CPU budget of 16384 tokens, so 8 samples.
    code, out, _ = run(capsys, "data", "throughput", "listops", "--data-dir", str(listops_dir), "--batches", "1",
                       "--workers", "0", "--train-steps", "1", "--json")
    entry = json.loads(out)["listops"]
    assert code == 0 and entry["train_batch"] == 8 and entry["train"] > 0
    code, out, _ = run(capsys, "data", "throughput", "listops", "--data-dir", str(listops_dir), "--batches", "1",
                       "--workers", "0", "--train-steps", "1", "--train-batch", "3", "--json")
    assert json.loads(out)["listops"]["train_batch"] == 3


def test_generate_refuses_real_data_tasks_and_unknown_options(tmp_path, capsys):
    code, _, err = run(capsys, "data", "generate", "image", "--data-dir", str(tmp_path))
    assert code == 2 and "no generator" in err and "lra data download image" in err
    code, _, err = run(capsys, "data", "generate", "listops", "--data-dir", str(tmp_path), "--images", "5")
    assert code == 2 and "no option 'images'" in err


def test_examples_writes_a_grid(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "grid.png"
    code, _, _ = run(capsys, "data", "examples", "pathfinder", "--out", str(out), "--per-label", "3")
    assert code == 0
    with Image.open(out) as im:
        assert im.mode == "L" and im.size[0] > im.size[1] > 64


@pytest.mark.parametrize("task", ["text", "retrieval", "image"])
def test_missing_real_data_fails_with_the_places_looked(task, tmp_path, capsys):
    code, out, _ = run(capsys, "data", "verify", task, "--data-dir", str(tmp_path), "--json")
    report = json.loads(out)
    assert code == 1 and all(s["count"] == 0 for s in report["splits"].values())
    assert f"lra data download {task}" in report["splits"]["train"]["error"]


def test_generating_complete_data_again_says_so_and_succeeds(tmp_path, capsys):
    argv = ["data", "generate", "listops", "--data-dir", str(tmp_path), "--train", "20", "--val", "4", "--test", "4",
            "--set", "min_length=5", "--set", "max_length=40", "--workers", "1"]
    assert run(capsys, *argv)[0] == 0
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "already complete" in out and "nothing to do" in out
    code, _, err = run(capsys, *argv[:-4], "--train", "30", "--workers", "1")  # other settings: still refused
    assert code == 2 and "--force" in err


def test_verify_prints_the_whole_missing_data_message(tmp_path, capsys):
    code, out, _ = run(capsys, "data", "verify", "listops", "--data-dir", str(tmp_path / "empty"))
    assert code == 1 and "BROKEN" in out
    assert "Looked for:" in out and "basic_train.tsv" in out and "lra data download listops" in out  # paths and fix


def pathfinder_with_bad_images(root, n: int, bad: list):
    import numpy as np
    from lra_fixtures import write_pathfinder_release

    rng = np.random.default_rng(0)
    imgs = [(rng.integers(0, 256, (32, 32), dtype=np.uint8), i % 2) for i in range(n)]
    for i in bad:
        imgs[i] = (b"", 1)  # an empty file, like the release's known broken image
    write_pathfinder_release(root, 32, "curv_baseline", imgs)
    from lra.core.presets import make_config

    cfg = make_config("pathfinder", "smoke", data_dir=str(root), attention="softmax")
    cfg.data.subdir, cfg.data.generate, cfg.data.options = "", False, {"difficulty": "curv_baseline"}
    return cfg


def test_verify_and_training_agree_on_lost_items_and_both_say_it(tmp_path, capsys):
    import tasks
    from lra.core.data import load_splits, notes
    from lra_base.errors import DataError

    task = tasks.get("pathfinder")
    from tasks.pathfinder import split_indices

    in_train = int(split_indices(300, "train", 0)[0])
    few = pathfinder_with_bad_images(tmp_path / "few", 300, [in_train])  # 1 of 240: skipped, and said
    code, out, _ = run(capsys, "data", "verify", "pathfinder", "--data-dir", few.data_dir,
                       "--task-option", "difficulty=curv_baseline")
    assert code == 0 and "OK" in out and "unreadable_images: 1" in out
    said = notes(load_splits(few, task), "pathfinder")
    assert len([line for line in said if "unreadable or missing item(s) skipped" in line]) == 1
    many = pathfinder_with_bad_images(tmp_path / "many", 40, [0, 7])  # 2 of 40: broken for both
    code, out, _ = run(capsys, "data", "verify", "pathfinder", "--data-dir", many.data_dir,
                       "--task-option", "difficulty=curv_baseline")
    assert code == 1 and "BROKEN" in out and "unreadable or missing (more than 1%)" in out
    with pytest.raises(DataError, match=r"unreadable or missing \(more than 1%\).*lra data verify pathfinder"):
        load_splits(many, task)
