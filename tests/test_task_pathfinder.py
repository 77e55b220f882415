"""Pathfinder / Path-X loaders on fixtures in the release layout: pixels as tokens, the seeded
80/10/10 split, the known empty image skipped and counted, malformed metadata, caches."""

import os

import numpy as np
import pytest

import tasks
from lra_base.errors import ConfigError, DataError, MissingDataError
from lra_fixtures import write_pathfinder_release
from lra.core.data import BatchView
from tasks.pathfinder import read_metadata, split_indices

PF, PX = tasks.get("pathfinder"), tasks.get("pathx")


def images(n, res, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (res, res), dtype=np.uint8), i % 2) for i in range(n)]


def by_content(split):
    return {bytes(np.asarray(split.tokens[i, 0])): int(split.labels[i]) for i in range(len(split))}


def test_pixels_are_tokens_in_row_major_order_and_never_padding(tmp_path):
    imgs = images(20, 32)
    imgs[0][0][:] = 0  # an all-black image is 1,024 real tokens
    write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", imgs)
    splits = {s: PF.prepared(tmp_path, s) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in splits.items()} == {"train": 16, "val": 2, "test": 2}
    want = {bytes(px.reshape(-1)): label for px, label in imgs}
    got = {}
    for p in splits.values():
        assert (p.lengths == 1024).all() and p.tokens.dtype == np.uint8
        got.update(by_content(p))
    assert got == want  # every image exactly once, with its label
    black = next(p for p in splits.values() if (np.asarray(p.tokens).max(axis=(1, 2)) == 0).any())
    i = int(np.flatnonzero(np.asarray(black.tokens).max(axis=(1, 2)) == 0)[0])
    batch = BatchView(black, 1024)[np.array([i])]
    assert batch["mask"].all() and (batch["ids"] == 0).all()


def test_split_is_seeded_recorded_and_reused_from_the_cache(tmp_path):
    write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", images(30, 32))
    a = PF.prepared(tmp_path, "val")
    assert a.meta["options"] == {"difficulty": "curv_contour_length_14", "split_seed": 0}
    mtime = os.stat(os.path.join(a.meta["path"], "tokens.bin")).st_mtime_ns
    assert PF.prepared(tmp_path, "val").meta["path"] == a.meta["path"]
    assert os.stat(os.path.join(a.meta["path"], "tokens.bin")).st_mtime_ns == mtime
    b = PF.prepared(tmp_path, "val", {"split_seed": 1})
    assert b.meta["path"] != a.meta["path"] and set(by_content(b)) != set(by_content(a))
    parts = [split_indices(1000, s, 3) for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [800, 100, 100]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))


def test_empty_and_missing_images_are_skipped_counted_and_verify_flags_too_many(tmp_path, capsys):
    from lra.data_cli import verify

    imgs = images(40, 32)
    imgs[7] = (b"", 1)  # like pathfinder32/curv_baseline/imgs/0/sample_172.png
    root = write_pathfinder_release(tmp_path, 32, "curv_baseline", imgs)
    (root / "imgs" / "3" / "sample_1.png").unlink()
    opts = {"difficulty": "curv_baseline"}
    total = sum(len(PF.prepared(tmp_path, s, opts)) for s in ("train", "val", "test"))
    assert total == 38
    skipped = {}
    for s in ("train", "val", "test"):
        for k, v in PF.prepared(tmp_path, s, opts).meta["skipped"].items():
            skipped[k] = skipped.get(k, 0) + v
    assert skipped == {"unreadable_images": 1, "missing_images": 1}
    assert "sample_" in capsys.readouterr().err
    report = verify(PF, tmp_path, opts)
    assert report["ok"] is False  # 2 of 40 lost is more than 1%


def test_doubly_nested_release_and_pathx_resolution(tmp_path):
    write_pathfinder_release(tmp_path, 128, "curv_contour_length_14", images(10, 128), nested=True)
    split = PX.prepared(tmp_path, "train")
    assert split.tokens.shape == (8, 1, 16384) and (split.lengths == 16384).all()
    assert PX.recipe.seq_len == 16384 and PX.max_len == 16384


def test_wrong_size_image_is_a_data_error(tmp_path):
    write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", images(10, 128))
    with pytest.raises(DataError, match="wrong size 128x128, expected 32x32"):
        for s in ("train", "val", "test"):
            PF.prepared(tmp_path, s)


@pytest.mark.parametrize("line,problem", [
    ("imgs/0 sample_0.png 0", "at least 4 space-separated fields"),
    ("imgs/0 sample_0.png 0 2 1.0", r"\(label\) must be 0 or 1"),
    ("../etc sample_0.png 0 1", "image folder"),
    ("imgs/0 sample_0.jpg 0 1", "PNG file name"),
])
def test_malformed_metadata_names_file_and_line(tmp_path, line, problem):
    root = write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", images(3, 32))
    meta = root / "metadata" / "0.npy"
    meta.write_text(meta.read_text() + line + "\n")
    with pytest.raises(DataError, match=problem) as err:
        list(read_metadata(meta))
    assert f"0.npy:4:" in str(err.value)
    with pytest.raises(DataError):
        PF.prepared(tmp_path, "train")


def test_missing_difficulty_says_where_and_how(tmp_path):
    write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", images(3, 32))
    with pytest.raises(MissingDataError) as err:
        PF.prepared(tmp_path, "train", {"difficulty": "curv_contour_length_9"})
    msg = str(err.value)
    assert str(tmp_path / "lra_release/pathfinder32/curv_contour_length_9/metadata") in msg
    assert "lra data generate pathfinder" in msg and "lra data download pathfinder" in msg
    with pytest.raises(ConfigError, match="unknown difficulty"):
        PF.prepared(tmp_path, "train", {"difficulty": "hard"})


def test_an_unfinished_generation_is_not_read(tmp_path):
    import json

    root = write_pathfinder_release(tmp_path, 32, "curv_contour_length_14", images(5, 32))
    (root / "GENERATED.json").write_text(json.dumps({"complete": False}))
    with pytest.raises(DataError, match="generation did not finish"):
        PF.prepared(tmp_path, "train")


def test_the_smoke_preset_is_the_easy_setting_and_its_config_says_so():
    """The smoke set learns within a minute only because it is the easiest drawing (issue 12: the
    LRA difficulty sat at chance); what it is travels with every record's configuration."""
    import argparse

    from lra.args import add_run_arguments, config_from_args
    from lra.core.identity import config_dict

    p = argparse.ArgumentParser()
    add_run_arguments(p)
    data = config_dict(config_from_args(p.parse_args(["--task", "pathfinder"])))["data"]
    assert data["options"] == {"difficulty": "curv_baseline"}
    assert {k: data["generator"][k] for k in ("contour_length", "distractors", "marker_radius")} == \
        {"contour_length": 1, "distractors": 0, "marker_radius": 3.0}
    mine = config_dict(config_from_args(p.parse_args(["--task", "pathfinder", "--task-option", "split_seed=2"])))
    assert mine["data"]["options"] == {"difficulty": "curv_baseline", "split_seed": "2"}  # added to, not replaced
