"""Retrieval (AAN pairs): TSV read with quoting off, two inputs cut to 4,000 bytes, sources, errors,
and a cache build that streams rows instead of holding the ids in memory."""

import tracemalloc

import numpy as np
import pytest

import tasks
from lra_base.errors import DataError, MissingDataError
from lra_fixtures import aan_rows, write_aan
from lra.core.data import BatchView
from tasks.retrieval import read_tsv

TASK = tasks.get("retrieval")


def stored_pairs(split):
    return [(int(split.labels[i]), bytes(split.tokens[i, 0, : split.lengths[i, 0]]),
             bytes(split.tokens[i, 1, : split.lengths[i, 1]])) for i in range(len(split))]


def test_rows_keep_quotes_literally_and_both_documents_are_cut_to_4000_bytes(tmp_path):
    quoted = '"A paper" said: "we cite" \'them\' """'
    rows = [("1", "P1", "P2", quoted, "x" * 4100), ("0.0", "P3", "P4", "\u00fcber " * 3, '"'), ("1.0", "A", "B", "t", "u")]
    write_aan(tmp_path, {"train": rows, "val": rows[:1], "test": rows[:2]})
    split = TASK.prepared(tmp_path, "train")
    assert split.tokens.shape == (3, 2, 4000) and TASK.num_inputs == 2
    assert stored_pairs(split) == [(1, quoted.encode(), b"x" * 4000), (0, ("\u00fcber " * 3).encode(), b'"'),
                                   (1, b"t", b"u")]
    assert split.meta["skipped"] == {"truncated_documents": 1}
    batch = BatchView(split, 8)[np.array([2, 0])]
    assert batch["ids"].shape == (2, 2, 8)
    assert batch["ids"][0].tolist() == [[ord("t") + 1] + [0] * 7, [ord("u") + 1] + [0] * 7]
    assert batch["mask"][1].all() and batch["mask"][0].sum() == 2
    assert batch["labels"].tolist() == [1, 1]


def test_splits_come_from_train_eval_test_in_the_release_nested_release_and_hub_copy(tmp_path):
    rng = np.random.default_rng(1)
    splits = {"train": aan_rows(rng, 6), "val": aan_rows(rng, 3), "test": aan_rows(rng, 4)}
    for where, kw in (("release", {}), ("nested", {"nested": True}), ("hub", {"hub": True})):
        write_aan(tmp_path / where, splits, **kw)
        counts = {s: len(TASK.prepared(tmp_path / where, s)) for s in ("train", "val", "test")}
        assert counts == {"train": 6, "val": 3, "test": 4}, where
    a = stored_pairs(TASK.prepared(tmp_path / "release", "val"))
    assert a == stored_pairs(TASK.prepared(tmp_path / "hub", "val"))
    assert [p[0] for p in a] == [int(r[0]) for r in splits["val"]]


@pytest.mark.parametrize("line,problem", [
    (b"1\tP1\tP2\tonly four", "expected 5 tab-separated fields"),
    (b"1\tP1\tP2\ta\tb\tc", "expected 5 tab-separated fields"),
    (b"yes\tP1\tP2\ta\tb", "label must be 0 or 1"),
    (b"2\tP1\tP2\ta\tb", "label must be 0 or 1"),
    (b"1\t\tP2\ta\tb", "empty paper id"),
])
def test_malformed_rows_name_file_and_line(tmp_path, line, problem):
    folder = write_aan(tmp_path, {"train": [("0", "a", "b", "c", "d")]})
    with open(folder / "new_aan_pairs.train.tsv", "ab") as f:
        f.write(line + b"\n")
    with pytest.raises(DataError, match=problem) as err:
        list(read_tsv(folder / "new_aan_pairs.train.tsv"))
    assert "new_aan_pairs.train.tsv:2:" in str(err.value)


def test_missing_split_names_release_and_hub_paths(tmp_path):
    write_aan(tmp_path, {"train": [("0", "a", "b", "c", "d")]})
    with pytest.raises(MissingDataError) as err:
        TASK.prepared(tmp_path, "val")
    msg = str(err.value)
    assert str(tmp_path / "lra_release/tsv_data/new_aan_pairs.eval.tsv") in msg
    assert str(tmp_path / "lra_release/lra_release/tsv_data/new_aan_pairs.eval.tsv") in msg
    assert str(tmp_path / "hf/OpenNLPLab/lra/data/aan/new_aan_pairs.eval.tsv") in msg
    assert "lra data download retrieval" in msg


def test_cache_build_streams_rows_to_disk(tmp_path):
    """2,000 pairs of 2 x 4,000 bytes = 16 MB of ids; building the cache must not hold them."""
    doc = "w" * 4500
    rows = [(str(i % 2), f"a{i}", f"b{i}", doc, doc) for i in range(2000)]
    write_aan(tmp_path, {"train": rows})
    tracemalloc.start()
    try:
        split = TASK.prepared(tmp_path, "train")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(split) == 2000 and split.lengths.min() == 4000
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB while writing 16 MiB of ids"
    assert isinstance(split.tokens, np.memmap)
