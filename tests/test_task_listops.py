"""ListOps: generator (checked by an independent evaluator), TSV format, loader, cache, errors."""

import os
import statistics

import numpy as np
import pytest

import tasks
from lra_base.errors import ConfigError, DataError, MissingDataError
from tasks.listops import VOCAB, generate_rows, read_tsv, write_tsv

TASK = tasks.get("listops")


def evaluate(expression: str) -> int:
    """Stack evaluation of the serialised text, written independently of the generator's tree walk."""
    stack = [("ROOT", [])]
    for tok in expression.replace("(", " ").replace(")", " ").split():
        if tok.startswith("["):
            stack.append((tok, []))
        elif tok == "]":
            op, args = stack.pop()
            value = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(statistics.median(a)),
                     "[SM": lambda a: sum(a) % 10}[op](args)
            stack[-1][1].append(value)
        else:
            stack[-1][1].append(int(tok))
    assert len(stack) == 1 and len(stack[0][1]) == 1
    return stack[0][1][0]


def token_length(expression: str) -> int:
    return len(expression.replace("(", " ").replace(")", " ").split())


def test_generator_labels_match_an_independent_evaluator_and_lengths_stay_in_bounds():
    rows = generate_rows(300, seed=11, min_length=500, max_length=2000, workers=2, chunk=40)
    assert len({r[0] for r in rows}) == 300
    for text, label in rows:
        assert evaluate(text) == label
        assert 500 < token_length(text) < 2000
    labels = np.bincount([r[1] for r in rows], minlength=10)
    assert (labels > 0).sum() >= 8  # every operator and value range is exercised


def test_generator_is_deterministic_whatever_the_worker_count():
    a = generate_rows(60, seed=5, min_length=20, max_length=200, workers=1, chunk=16)
    b = generate_rows(60, seed=5, min_length=20, max_length=200, workers=2, chunk=16)
    c = generate_rows(60, seed=6, min_length=20, max_length=200, workers=2, chunk=16)
    assert a == b and a != c


def test_generator_rejects_bad_bounds():
    with pytest.raises(ConfigError):
        generate_rows(5, min_length=100, max_length=50)


def test_tsv_round_trip(tmp_path):
    rows = generate_rows(20, seed=1, min_length=10, max_length=100, workers=1)
    path = tmp_path / "basic_test.tsv"
    write_tsv(path, rows)
    assert path.read_bytes().startswith(b"Source\tTarget\r\n")
    assert [(s, t) for _, s, t in read_tsv(path)] == rows


def write_release(root, rows_by_split, nested=False):
    folder = root / "lra_release" / ("lra_release" if nested else "") / "listops-1000"
    for split, rows in rows_by_split.items():
        write_tsv(folder / f"basic_{split}.tsv", rows)
    return folder


def test_loader_applies_the_official_tokenisation(tmp_path):
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [SM 4 ) ( ( ( [MED 1 ) 7 ) ] ) ) ] )", 8)]
    write_release(tmp_path, {"train": rows, "val": rows, "test": rows}, nested=True)  # doubly nested copy
    split = TASK.prepared(tmp_path, "train")
    v = VOCAB
    assert list(split.tokens[0, 0, : split.lengths[0, 0]]) == [v["[MAX"], v["2"], v["9"], v["X"]]
    assert list(split.tokens[1, 0, : split.lengths[1, 0]]) == [v["[SM"], v["4"], v["[MED"], v["1"], v["7"], v["X"], v["X"]]
    assert list(split.labels) == [9, 8]
    assert split.lengths[:, 0].tolist() == [4, 7]


def test_unknown_tokens_are_counted(tmp_path):
    rows = [("( ( [MAX 2 ) [FIRST ] )", 2)]
    write_release(tmp_path, {"train": rows, "val": rows, "test": rows})
    split = TASK.prepared(tmp_path, "train")
    assert split.meta["skipped"] == {"unknown_tokens": 1}
    assert VOCAB["<unk>"] in split.tokens[0, 0].tolist()


@pytest.mark.parametrize("content,problem,line", [
    ("Source\tTarget\r\n( [MAX 2 ] )\t2\textra\r\n", "expected 2 tab-separated fields", 2),
    ("Source\tTarget\r\n( [MAX 2 ] )\t2\r\n( [MAX 3 ] )\tthree\r\n", "Target must be an integer", 3),
    ("Source\tTarget\r\n( [MAX 2 ] )\t2\r\n\t4\r\n", "empty Source", 3),
    ("Source\tTarget\r\n( [MAX 2 ] )\t12\r\n", "Target must be an integer 0-9", 2),
    ("Input\tLabel\r\n( [MAX 2 ] )\t2\r\n", "expected the header", 1),
])
def test_malformed_rows_name_file_and_line(tmp_path, content, problem, line):
    folder = tmp_path / "lra_release" / "listops-1000"
    folder.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (folder / f"basic_{split}.tsv").write_text(content, newline="")
    with pytest.raises(DataError) as err:
        TASK.prepared(tmp_path, "train")
    assert problem in str(err.value)
    assert f"basic_train.tsv:{line}:" in str(err.value)


def test_missing_data_says_where_it_looked_and_how_to_get_it(tmp_path):
    with pytest.raises(MissingDataError) as err:
        TASK.prepared(tmp_path, "val")
    msg = str(err.value)
    assert str(tmp_path / "lra_release" / "listops-1000" / "basic_val.tsv") in msg
    assert str(tmp_path / "lra_release" / "lra_release" / "listops-1000" / "basic_val.tsv") in msg
    assert "lra data generate listops" in msg and "lra data download listops" in msg


def test_cache_is_reused_and_invalidated_by_a_changed_file(listops_dir, tmp_path):
    a = TASK.prepared(listops_dir, "val")
    tokens_file = os.path.join(a.meta["path"], "tokens.bin")
    before = os.stat(tokens_file).st_mtime_ns
    b = TASK.prepared(listops_dir, "val")
    assert b.meta["path"] == a.meta["path"] and os.stat(tokens_file).st_mtime_ns == before
    # a copy whose file changed gets a new cache
    rows = [(s, t) for _, s, t in read_tsv(listops_dir / "lra_release/listops-1000/basic_val.tsv")]
    write_release(tmp_path, {"train": rows, "val": rows[:10], "test": rows})
    c = TASK.prepared(tmp_path, "val")
    assert c.meta["path"] != a.meta["path"] and len(c) == 10


def test_generate_writes_the_release_layout_and_refuses_to_overwrite(listops_dir):
    folder = listops_dir / "lra_release" / "listops-1000"
    counts = {s: sum(1 for _ in read_tsv(folder / f"basic_{s}.tsv")) for s in ("train", "val", "test")}
    assert counts == {"train": 320, "val": 64, "test": 64}
    with pytest.raises(ConfigError, match="--force"):
        TASK.generate(listops_dir, train=5, val=5, test=5)
