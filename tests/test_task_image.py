"""Image (CIFAR-10 grayscale): the TF grayscale formula, the seeded 45k/5k-style split, every source
format, and malformed batches."""

import pickle

import numpy as np
import pytest

import tasks
from lra_base.errors import ConfigError, DataError, MissingDataError
from lra_fixtures import cifar_batches, cifar_pickle, write_cifar_hub, write_cifar_pickles, write_cifar_tar
from tasks.image import load_batch, to_gray

TASK = tasks.get("image")
PER_BATCH = 12  # 60 training images, 12 test images


@pytest.fixture(scope="module")
def batches():
    return cifar_batches(np.random.default_rng(0), PER_BATCH)


def gray_reference(rgb: np.ndarray) -> np.ndarray:
    """tf.image.rgb_to_grayscale on uint8, written out in float64."""
    g = (rgb[..., 0] * 0.2989 + rgb[..., 1] * 0.5870 + rgb[..., 2] * 0.1140) / 255.0
    return np.floor(g * 255.5).astype(np.uint8)


def test_grayscale_is_tensorflows_formula():
    colours = np.array([[255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 0], [10, 200, 30]], np.uint8)
    assert to_gray(colours).tolist() == [255, 76, 149, 29, 0, 124]
    rgb = np.random.default_rng(1).integers(0, 256, (4000, 3), dtype=np.uint8)
    exact = (rgb[:, 0] * 0.2989 + rgb[:, 1] * 0.5870 + rgb[:, 2] * 0.1140) / 255.0 * 255.5
    clear = np.abs(exact - np.round(exact)) > 1e-3  # away from float32 / float64 rounding ties
    assert (to_gray(rgb)[clear] == gray_reference(rgb)[clear]).all()


def test_pickles_give_grayscale_row_major_tokens_and_a_seeded_split(tmp_path, batches):
    write_cifar_pickles(tmp_path, batches)
    opts = {"val_size": 15}
    train, val, test = (TASK.prepared(tmp_path, s, opts) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (45, 15, 12)
    assert (train.lengths == 1024).all() and TASK.token_offset == 0 and TASK.vocab_size == 256
    all_rgb = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    all_labels = np.concatenate([batches[f"data_batch_{i}"][1] for i in range(1, 6)])
    gray = to_gray(all_rgb).reshape(60, 1024)  # the formula is checked above; this checks layout and order
    rows = {bytes(r): int(l) for r, l in zip(gray, all_labels)}
    seen = [bytes(np.asarray(s.tokens[i, 0])) for s in (train, val) for i in range(len(s))]
    assert sorted(seen) == sorted(rows)  # train and val partition the training batches
    for s in (train, val):
        for i in range(len(s)):
            assert rows[bytes(np.asarray(s.tokens[i, 0]))] == s.labels[i]
    assert np.array_equal(test.tokens[:, 0], to_gray(batches["test_batch"][0]).reshape(12, 1024))
    assert np.abs(test.tokens[:, 0].astype(int) - gray_reference(batches["test_batch"][0]).reshape(12, 1024)).max() <= 1
    assert val.meta["options"] == {"source": "auto", "val_size": 15, "split_seed": 0}
    other = TASK.prepared(tmp_path, "val", {"val_size": 15, "split_seed": 1})
    assert other.meta["path"] != val.meta["path"]
    assert not np.array_equal(np.asarray(other.tokens), np.asarray(val.tokens))


def test_archive_and_hub_copies_match_the_pickles(tmp_path, batches):
    write_cifar_pickles(tmp_path / "p", batches)
    write_cifar_tar(tmp_path / "a" / "cifar-10-python.tar.gz", batches)
    write_cifar_hub(tmp_path / "h", batches, layout="disk")
    write_cifar_hub(tmp_path / "q", batches, layout="parquet")
    for split in ("train", "test"):
        ref = TASK.prepared(tmp_path / "p", split, {"val_size": 10})
        for other in ("a", "h", "q"):
            got = TASK.prepared(tmp_path / other, split, {"val_size": 10})
            assert np.array_equal(np.asarray(got.tokens), np.asarray(ref.tokens)), (other, split)
            assert np.array_equal(got.labels, ref.labels)


def test_missing_data_lists_the_places_looked(tmp_path):
    with pytest.raises(MissingDataError) as err:
        TASK.prepared(tmp_path, "test")
    msg = str(err.value)
    for where in ("cifar-10-batches-py/test_batch", "cifar-10-python.tar.gz", "hf/uoft-cs/cifar10"):
        assert str(tmp_path / where) in msg
    assert "lra data download image" in msg


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


@pytest.mark.parametrize("raw,problem", [
    (b"not a pickle at all", "not a CIFAR-10 python batch"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8)}), "expected keys 'data' and 'labels'"),
    (pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}), "N x 3072 uint8"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}), "list of 2 integers"),
    (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 12]}), "labels must be 0-9"),
    (pickle.dumps({"data": _Evil(), "labels": []}), "refusing to load"),
])
def test_malformed_batches_are_data_errors_naming_the_file(tmp_path, batches, raw, problem):
    write_cifar_pickles(tmp_path, batches)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(raw)
    with pytest.raises(DataError, match=problem) as err:
        TASK.prepared(tmp_path, "train")
    assert "data_batch_3" in str(err.value)


def test_options_are_checked(tmp_path, batches):
    write_cifar_pickles(tmp_path, batches)
    with pytest.raises(ConfigError, match="val_size"):
        TASK.prepared(tmp_path, "val", {"val_size": 0})
    with pytest.raises(DataError, match="leaves no training images"):
        TASK.prepared(tmp_path, "train", {"val_size": 60})
    assert load_batch(cifar_pickle(*batches["test_batch"], "test_batch"), "x")[0].shape == (PER_BATCH, 32, 32, 3)
