"""Writers of tiny datasets in exactly the published formats, for the tests (and for timing the
loaders on stand-in data of realistic shape). Nothing here is read by the suite itself."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

# A few strings with multi-byte UTF-8, quotes and tabs-free punctuation, as real reviews have.
WORDS = ["film", "great", "bad", "plot", "acting", "\u00e9l\u00e8ve", "na\u00efve", "\u2713", "\"quoted\"",
         "it's", "<br />", "\u65e5\u672c", "ending", "\u00a9", "boring", "superb"]


def text_of(rng: np.random.Generator, n_words: int) -> str:
    return " ".join(rng.choice(WORDS, size=n_words))


# --- IMDb -------------------------------------------------------------------------------------


def imdb_reviews(rng, n_per_label: int, n_words=(5, 40)) -> list[tuple[int, int, int, str]]:
    """(label, id, rating, text) rows; ratings consistent with the folder (neg 1-4, pos 7-10)."""
    out = []
    for label in (0, 1):
        for i in range(n_per_label):
            rating = int(rng.integers(1, 5)) if label == 0 else int(rng.integers(7, 11))
            out.append((label, int(rng.integers(0, 12500)) * 10 + i, rating, text_of(rng, int(rng.integers(*n_words)))))
    return out


def write_aclimdb_folder(root: Path, splits: dict) -> Path:
    base = Path(root) / "aclImdb"
    for split, rows in splits.items():
        for label, ident, rating, text in rows:
            folder = base / split / ("pos" if label else "neg")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{ident}_{rating}.txt").write_bytes(text.encode("utf-8"))
        (base / split / "urls_pos.txt").write_text("http://www.imdb.com/title/tt0000000/usercomments\n")
    (base / "imdb.vocab").write_text("the\nand\n")
    (base / "README").write_text("Large Movie Review Dataset v1.0\n")
    return base


def write_aclimdb_tar(path: Path, splits: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        def add(name, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"Large Movie Review Dataset v1.0\n")
        for split, rows in splits.items():
            for label, ident, rating, text in rows:
                add(f"aclImdb/{split}/{'pos' if label else 'neg'}/{ident}_{rating}.txt", text.encode("utf-8"))
    return path


def save_hub_copy(dd, target: Path, layout: str) -> Path:
    """Writes a DatasetDict as a local hub copy: `save_to_disk`, or per-split parquet files laid out
    as the hub stores them (`plain_text/<split>-00000-of-00001.parquet`)."""
    if layout == "disk":
        dd.save_to_disk(str(target))
    else:
        for split, ds in dd.items():
            (target / "plain_text").mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(target / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return target


def write_imdb_hub(root: Path, splits: dict, layout: str = "disk", repo: str = "stanfordnlp/imdb") -> Path:
    """A local copy of the hub dataset: save_to_disk, or parquet files as the hub stores them."""
    import datasets

    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["neg", "pos"])})
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [r[3] for r in rows], "label": [r[0] for r in rows]},
                                          features=features)
        for split, rows in splits.items()
    })
    return save_hub_copy(dd, Path(root) / "hf" / repo, layout)


# --- AAN (Retrieval) ----------------------------------------------------------------------------


def aan_rows(rng, n: int, n_words=(5, 60)) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for i in range(n):
        label = "1" if i % 2 else "0"
        rows.append((label, f"P{i:02d}-{rng.integers(1000, 9999)}", f"W{i:02d}-{rng.integers(1000, 9999)}",
                     text_of(rng, int(rng.integers(*n_words))), text_of(rng, int(rng.integers(*n_words)))))
    return rows


def write_aan(root: Path, splits: dict, hub: bool = False, nested: bool = False) -> Path:
    names = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
    if hub:
        folder = Path(root) / "hf" / "OpenNLPLab" / "lra" / "data" / "aan"
    else:
        folder = Path(root) / "lra_release" / ("lra_release" if nested else "") / "tsv_data"
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        with open(folder / names[split], "wb") as f:
            for row in rows:
                f.write("\t".join(row).encode("utf-8") + b"\n")
    return folder


# --- CIFAR-10 -------------------------------------------------------------------------------------


def cifar_batches(rng, per_batch: int) -> dict:
    """name -> (images (n, 32, 32, 3) uint8, labels list) for data_batch_1..5 and test_batch."""
    out = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        out[name] = (rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8),
                     [int(x) for x in rng.integers(0, 10, size=per_batch)])
    return out


def cifar_pickle(images: np.ndarray, labels: list, name: str) -> bytes:
    """The python-version batch format: data is N x 3072, the R, G and B planes one after another."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    d = {"batch_label": f"{name} of 5", "labels": labels, "data": data,
         "filenames": [f"img_{i}.png" for i in range(len(images))]}
    return pickle.dumps(d, protocol=2)


def write_cifar_pickles(root: Path, batches: dict) -> Path:
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (images, labels) in batches.items():
        (folder / name).write_bytes(cifar_pickle(images, labels, name))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["airplane"] * 10}, protocol=2))
    return folder


def write_cifar_tar(path: Path, batches: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, (images, labels) in batches.items():
            data = cifar_pickle(images, labels, name)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def write_cifar_hub(root: Path, batches: dict, layout: str = "disk", repo: str = "uoft-cs/cifar10") -> Path:
    import datasets
    from PIL import Image

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    splits = {"train": (np.concatenate([a for a, _ in train]), sum((b for _, b in train), [])),
              "test": batches["test_batch"]}
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"img": [Image.fromarray(x) for x in imgs], "label": labels}, features=features)
        for split, (imgs, labels) in splits.items()
    })
    return save_hub_copy(dd, Path(root) / "hf" / repo, layout)


# --- Pathfinder release layout ----------------------------------------------------------------------


def write_pathfinder_release(root: Path, resolution: int, difficulty: str, images: list, per_batch: int = 5,
                             nested: bool = False) -> Path:
    """images: list of (pixels (res, res) uint8 or bytes for a raw file, label). Metadata as the release."""
    from PIL import Image

    base = Path(root) / "lra_release" / ("lra_release" if nested else "") / f"pathfinder{resolution}" / difficulty
    (base / "metadata").mkdir(parents=True, exist_ok=True)
    lines: dict[int, list[str]] = {}
    for k, (pixels, label) in enumerate(images):
        b, i = divmod(k, per_batch)
        folder = base / "imgs" / str(b)
        folder.mkdir(parents=True, exist_ok=True)
        if isinstance(pixels, bytes):
            (folder / f"sample_{i}.png").write_bytes(pixels)
        else:
            Image.fromarray(pixels, mode="L").save(folder / f"sample_{i}.png")
        lines.setdefault(b, []).append(f"imgs/{b} sample_{i}.png {i} {label} 1.0 14 4 2 0.5 1 1")
    for b, ls in lines.items():
        (base / "metadata" / f"{b}.npy").write_text("\n".join(ls) + "\n")
    return base


# --- stand-ins of realistic size (for timing loaders without the real downloads) ---------------


def write_standins(root: Path, retrieval_pairs: int = 20_000, seed: int = 0) -> Path:
    """Text, Retrieval and Image in their published formats with random content of the real
    shapes: 25k + 25k reviews with IMDb-like byte lengths (median ~1 KB, long tail), AAN pairs whose
    documents exceed 4,000 bytes, and the full 50k + 10k CIFAR-10 batches."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz      .,", dtype=np.uint8)

    def blob(n: int) -> str:
        return rng.choice(letters, size=n).tobytes().decode("ascii")

    splits = {}
    for split in ("train", "test"):
        rows = []
        for label in (0, 1):
            lengths = np.clip(rng.lognormal(np.log(950), 0.75, size=12_500), 50, 13_000).astype(int)
            for i, n in enumerate(lengths):
                rows.append((label, i, 2 if label == 0 else 9, blob(int(n))))
        splits[split] = rows
    write_aclimdb_folder(root, splits)
    pairs = {"train": retrieval_pairs, "val": retrieval_pairs // 8, "test": retrieval_pairs // 8}
    folder = root / "lra_release" / "tsv_data"
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
    for split, n in pairs.items():
        with open(folder / names[split], "w") as f:
            for i in range(n):
                f.write(f"{i % 2}\tA{i}\tB{i}\t{blob(int(rng.integers(4000, 9000)))}\t{blob(int(rng.integers(4000, 9000)))}\n")
    write_cifar_pickles(root, cifar_batches(rng, 10_000))
    return root
