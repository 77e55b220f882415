"""Image: CIFAR-10 classification from the grayscale pixels as a sequence, 1K tokens.

Each 32x32 image is made grayscale with LRA's formula (TensorFlow's `rgb_to_grayscale`: weights
0.2989, 0.5870, 0.1140 on the channels scaled to [0, 1], back to uint8 by x 255.5 and truncation)
and read in row-major order; tokens are the pixel values 0..255 and are never padding. Splits:
the 50,000 training images are split 45,000 / 5,000 into train and val by a seeded permutation
(options `val_size`, `split_seed`, recorded with the prepared data; LRA took the last 10% of
TFDS's order); test is the 10,000-image test batch.

Sources, found under --data-dir in this order (option `source` picks one):
- pickles: `cifar-10-batches-py/{data_batch_1..5,test_batch}` (the extracted cifar-10-python.tar.gz):
  dicts with `data` (N x 3072 uint8, the R, G and B planes) and `labels`
- archive: `cifar-10-python.tar.gz` (or `downloads/cifar-10-python.tar.gz`), read without extracting
- hub:     `hf/uoft-cs/cifar10` (or `hf/cifar10`): columns `img` (PNG) and `label`

The pickles are read with an unpickler that accepts numpy arrays and plain containers only, so a
tampered file cannot run code, and a malformed one is reported by name.
"""

from __future__ import annotations

import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lra_base.errors import DataError
from tasks import hub
from tasks.base import Example, Recipe, Smoke, Task

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
HUB_IDS = ("uoft-cs/cifar10", "cifar10")
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
SOURCES = ("auto", "pickles", "archive", "hub")
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB -> (...) uint8, exactly as tf.image.rgb_to_grayscale on uint8 images."""
    f = rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    g = f @ GRAY_WEIGHTS
    return np.clip(g * np.float32(255.5), 0, 255).astype(np.uint8)


class _SafeUnpickler(pickle.Unpickler):
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a CIFAR batch holds only arrays and lists)")


def load_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR-10 python batch -> (images (N, 32, 32, 3) uint8, labels (N,) int64)."""
    try:
        d = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except Exception as exc:  # pickle raises many kinds on garbage: all mean "not a batch"
        raise DataError(f"{where}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
    if not isinstance(d, dict):
        raise DataError(f"{where}: expected a dict with 'data' and 'labels', got {type(d).__name__}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}
    if "data" not in d or "labels" not in d:
        raise DataError(f"{where}: expected keys 'data' and 'labels', found {sorted(map(str, d))}")
    data, labels = d["data"], d["labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{where}: 'data' must be an N x 3072 uint8 array, got {desc}")
    try:
        labels = np.asarray(labels)
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    except Exception:
        ok = False
    if not ok or len(labels) != len(data):
        raise DataError(f"{where}: 'labels' must be a list of {len(data)} integers")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"{where}: labels must be 0-9, found {int(labels.min())}..{int(labels.max())}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, labels.astype(np.int64)


def read_pickles(folder: Path, names) -> tuple[np.ndarray, np.ndarray]:
    parts = []
    for name in names:
        p = folder / name
        try:
            raw = p.read_bytes()
        except OSError as exc:
            raise DataError(f"{p}: cannot read ({exc.strerror or exc})") from None
        parts.append(load_batch(raw, str(p)))
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def read_archive(path: Path, names) -> tuple[np.ndarray, np.ndarray]:
    found = {}
    try:
        with tarfile.open(path, "r|*") as tar:
            for member in tar:
                base = member.name.split("/")[-1]
                if member.isfile() and base in names and member.name.rstrip("/").endswith(f"{FOLDER}/{base}"):
                    found[base] = load_batch(tar.extractfile(member).read(), f"{path}:{member.name}")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataError(f"{path}: the archive is truncated or corrupt ({type(exc).__name__}: {exc}); "
                        f"download it again: lra data download image --data-dir {path.parent}") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{path}: {FOLDER}/{missing[0]} is not in this archive")
    parts = [found[n] for n in names]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def read_hub(copy: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for n, row in hub.rows(copy, split, ("img", "label")):
        img, label = hub.column(row, "img", copy, n), hub.column(row, "label", copy, n)
        try:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except AttributeError:
            raise DataError(f"{copy}: {split} row {n}: 'img' is not an image ({type(img).__name__})") from None
        except OSError as exc:
            raise DataError(f"{copy}: {split} row {n}: unreadable image ({exc})") from None
        if arr.shape != (32, 32, 3):
            raise DataError(f"{copy}: {split} row {n}: image is {arr.shape[1]}x{arr.shape[0]}, expected 32x32")
        if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= label <= 9:
            raise DataError(f"{copy}: {split} row {n}: 'label' must be 0-9, got {label!r}")
        images.append(arr)
        labels.append(int(label))
    if not images:
        raise DataError(f"{copy}: split {split!r} is empty")
    return np.stack(images), np.asarray(labels, np.int64)


class Image(Task):
    name = "image"
    description = "Image: CIFAR-10 class from grayscale pixels in row-major order, 1K tokens"
    max_len = 32 * 32
    grid = (32, 32)
    vocab_size = 256
    num_classes = 10
    token_offset = 0
    storage_dtype = np.uint8
    recipe = Recipe(seq_len=1024, batch_size=256, lr=1e-4, warmup=175, eval_every=50, eval_samples=20 * 256)
    smoke = Smoke(seq_len=1024, max_train=1024, max_val=128, max_test=128, steps=60, batch_size=8, eval_every=20)

    @dataclass
    class Options:
        source: str = "auto"  # auto | pickles | archive | hub
        val_size: int = 5000  # training images held out for validation
        split_seed: int = 0  # seeds which ones

        def __post_init__(self):
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")
            if self.val_size < 1:
                raise ValueError(f"val_size must be >= 1, got {self.val_size}")

    def _find(self, data_dir: Path, options) -> tuple[str, Path]:
        candidates = []
        if options.source in ("auto", "pickles"):
            candidates.append(("pickles", data_dir / FOLDER))
        if options.source in ("auto", "archive"):
            candidates += [("archive", data_dir / ARCHIVE), ("archive", data_dir / "downloads" / ARCHIVE)]
        if options.source in ("auto", "hub"):
            candidates += [("hub", data_dir / hub.HUB_DIR / i) for i in HUB_IDS]
        for kind, path in candidates:
            if (kind == "pickles" and (path / TEST_BATCHES[0]).is_file()) or \
               (kind == "archive" and path.is_file()) or (kind == "hub" and path.is_dir()):
                return kind, path
        looked = [p / TEST_BATCHES[0] if k == "pickles" else p for k, p in candidates]
        raise self.missing(data_dir, looked)

    def source_files(self, data_dir, split, options):
        kind, path = self._find(Path(data_dir), options)
        names = TEST_BATCHES if split == "test" else TRAIN_BATCHES
        if kind == "pickles":
            return [path / n for n in names]
        if kind == "archive":
            return [path]
        return hub.split_files(path, "test" if split == "test" else "train") or [path]

    def load(self, data_dir: Path, split: str, options) -> tuple[np.ndarray, np.ndarray]:
        """Grayscale pixels (n, 1024) and labels of a split."""
        kind, path = self._find(Path(data_dir), options)
        part = "test" if split == "test" else "train"
        names = TEST_BATCHES if part == "test" else TRAIN_BATCHES
        if kind == "pickles":
            images, labels = read_pickles(path, names)
        elif kind == "archive":
            images, labels = read_archive(path, names)
        else:
            images, labels = read_hub(path, part)
        # in chunks: the float32 intermediate of all 50k images at once would take ~600 MB
        pixels = np.concatenate([to_gray(images[i : i + 5000]).reshape(-1, 1024) for i in range(0, len(images), 5000)])
        if part == "train":
            if options.val_size >= len(pixels):
                raise DataError(f"{path}: val_size {options.val_size} leaves no training images "
                                f"({len(pixels)} in the training batches)")
            perm = np.random.default_rng([options.split_seed, 45005]).permutation(len(pixels))
            keep = np.sort(perm[: options.val_size] if split == "val" else perm[options.val_size :])
            pixels, labels = pixels[keep], labels[keep]
        return pixels, labels

    def examples(self, data_dir, split, options) -> Iterator[Example]:
        pixels, labels = self.load(Path(data_dir), split, options)
        for row, label in zip(pixels, labels):
            yield Example((row,), int(label))

    def how_to_get(self, data_dir):
        return (f"lra data download image --data-dir {data_dir}                (cifar-10-python.tar.gz, 163 MB)\n"
                f"  lra data download image --data-dir {data_dir} --source hub   (uoft-cs/cifar10 via datasets)")
