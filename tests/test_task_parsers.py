"""Property-based tests: every data parser, fed malformed input, either reads it or raises the
suite's DataError naming the file (and line or item) - never an unexplained exception from deep
inside a library."""

import io
import pickle
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import tasks
from lra_base.errors import DataError
from lra_fixtures import cifar_pickle, write_imdb_hub
from tasks import image, listops, pathfinder, retrieval, text

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Lines built from the pieces real files are made of, plus noise: far more likely than random
# bytes to get past the first check and exercise the later ones.
listops_pieces = st.sampled_from(["Source", "Target", "\t", "\r\n", "\n", "( ", ") ", "[MAX ", "[SM ", "] ", "3 ",
                                  "12", "x", '"', "\x00", "\u00e9", " "])
aan_pieces = st.sampled_from(["0", "1", "1.0", "0.0", "nan", "2", "\t", "\n", "\r\n", "P01-1", "W02", "text",
                              '"', "'", "\x00", " ", "\u00fc"])
meta_pieces = st.sampled_from(["imgs/0", "imgs/1", "../x", "/abs", " ", "\n", "sample_0.png", "sample_1.jpg", "0",
                               "1", "2", "1.0", "14", "\t", "\x00", "\u00e9"])


def noisy(pieces):
    return st.one_of(st.lists(pieces, max_size=40).map("".join).map(lambda s: s.encode("utf-8")),
                     st.binary(max_size=200))


def write(data: bytes, name: str) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="lra-prop-"))
    path = folder / name
    path.write_bytes(data)
    return path


def reads_or_data_error(fn, path: Path):
    try:
        return list(fn())
    except DataError as exc:
        assert str(path) in str(exc), f"the error does not name {path}: {exc}"
        return None


@SETTINGS
@given(noisy(listops_pieces))
def test_listops_tsv(data):
    path = write(data, "basic_train.tsv")
    rows = reads_or_data_error(lambda: listops.read_tsv(path), path)
    if rows is not None:
        assert all(0 <= label <= 9 and src.strip() for _, src, label in rows)


@SETTINGS
@given(noisy(aan_pieces))
def test_aan_tsv(data):
    path = write(data, "new_aan_pairs.train.tsv")
    rows = reads_or_data_error(lambda: retrieval.read_tsv(path, 4000), path)
    if rows is not None:
        assert all(label in (0, 1) and len(a) <= 4000 for _, label, a, _ in rows)


@SETTINGS
@given(noisy(meta_pieces))
def test_pathfinder_metadata(data):
    path = write(data, "0.npy")
    rows = reads_or_data_error(lambda: pathfinder.read_metadata(path), path)
    if rows is not None:
        assert all(label in (0, 1) and name.endswith(".png") for _, _, name, label in rows)


@SETTINGS
@given(st.binary(max_size=300))
def test_pathfinder_images_are_read_or_reported(data):
    path = write(data, "sample_0.png")
    pixels, why = pathfinder.read_image(str(path), 32)
    assert (pixels is None) == bool(why)
    if pixels is not None:
        assert pixels.shape == (1024,) and pixels.dtype == np.uint8


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(["neg", "pos"]),
                          st.from_regex(r"[0-9a-z_.]{1,12}", fullmatch=True),
                          st.binary(max_size=30)), min_size=1, max_size=6))
def test_imdb_folder(files):
    root = Path(tempfile.mkdtemp(prefix="lra-prop-")) / "aclImdb"
    for pol in ("neg", "pos"):
        (root / "train" / pol).mkdir(parents=True)
    for pol, name, data in files:
        assume(name not in (".", ".."))
        (root / "train" / pol / name).write_bytes(data)
    try:
        rows = list(text.read_folder(root, "train"))
    except DataError as exc:
        assert str(root) in str(exc)
        return
    assert all(label in (0, 1) for label, _ in rows)


def tar_bytes(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@SETTINGS
@given(st.one_of(
    st.binary(max_size=200),
    st.lists(st.tuples(st.sampled_from(["aclImdb/train/pos/1_9.txt", "aclImdb/train/neg/2_1.txt",
                                        "aclImdb/train/pos/3_2.txt", "aclImdb/train/neg/x.txt", "other/file"]),
                       st.binary(max_size=20)), max_size=5).map(tar_bytes),
    st.tuples(st.just(tar_bytes([("aclImdb/train/pos/1_9.txt", b"good")])), st.integers(1, 60)).map(
        lambda t: t[0][: -t[1]]),  # truncated
))
def test_imdb_archive(data):
    path = write(data, "aclImdb_v1.tar.gz")
    rows = reads_or_data_error(lambda: text.read_archive(path, "train"), path)
    if rows is not None:
        assert rows and all(label in (0, 1) for label, _ in rows)


VALID_BATCH = cifar_pickle(np.zeros((2, 32, 32, 3), np.uint8), [1, 2], "data_batch_1")


@SETTINGS
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(0, len(VALID_BATCH) - 1), st.integers(0, 255)).map(
        lambda t: VALID_BATCH[: t[0]] + bytes([t[1]]) + VALID_BATCH[t[0] + 1 :]),  # one byte changed
    st.integers(1, len(VALID_BATCH) - 1).map(lambda n: VALID_BATCH[:n]),  # truncated
    st.recursive(st.none() | st.integers() | st.binary(max_size=8) | st.text(max_size=8),
                 lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                 max_leaves=8).map(lambda obj: pickle.dumps(obj, protocol=2)),
))
def test_cifar_batches(raw):
    try:
        images, labels = image.load_batch(raw, "data_batch_1")
    except DataError as exc:
        assert "data_batch_1" in str(exc)
        return
    assert images.shape[1:] == (32, 32, 3) and len(images) == len(labels)


@pytest.fixture(scope="module")
def hub_copies(tmp_path_factory):
    """Good bytes of a parquet copy and of a save_to_disk (arrow) copy, and where each file lives."""
    out = {}
    rows = [(i % 2, i, 1, f"review number {i} " * 5) for i in range(40)]
    for layout in ("parquet", "disk"):
        root = tmp_path_factory.mktemp(layout)
        copy = write_imdb_hub(root, {"train": rows}, layout=layout)
        data = next(copy.rglob("*.parquet" if layout == "parquet" else "*.arrow"))
        out[layout] = (root, data.relative_to(root))
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(layout=st.sampled_from(["parquet", "disk"]), cut=st.integers(0, 10_000), flip=st.integers(0, 10_000),
       value=st.integers(0, 255))
def test_hub_copies(hub_copies, layout, cut, flip, value):
    import shutil

    src, rel = hub_copies[layout]
    root = Path(tempfile.mkdtemp(prefix="lra-prop-"))
    shutil.copytree(src / "hf", root / "hf")
    path = root / rel
    data = bytearray(path.read_bytes())
    data[flip % len(data)] = value
    path.write_bytes(bytes(data[: len(data) - cut % len(data)]))
    try:
        rows = list(text.read_hub(root / "hf" / "stanfordnlp" / "imdb", "train"))
    except DataError as exc:
        assert "imdb" in str(exc)
        return
    assert all(label in (0, 1) and isinstance(b, bytes) for label, b in rows)


def test_whole_pipeline_reports_a_malformed_file_by_name(tmp_path):
    """The same guarantee end to end: prepared() on a broken file raises DataError, leaves no cache."""
    folder = tmp_path / "lra_release" / "tsv_data"
    folder.mkdir(parents=True)
    (folder / "new_aan_pairs.train.tsv").write_bytes(b"1\ta\tb\tc\td\n\xff\xfe\x00\n")
    with pytest.raises(DataError, match="new_aan_pairs.train.tsv:2:"):
        tasks.get("retrieval").prepared(tmp_path, "train")
    assert not list((tmp_path / ".cache").rglob("meta.json"))
