"""What a task is, and the machinery every task shares: locating files and the prepared-data cache.

A task describes itself (name, content length, vocabulary, classes, one or two inputs, its layout,
its paper recipe and its smoke settings) and knows how to read its published files into examples.
The harness only ever sees that description and the prepared splits (lra/core/data.py turns them
into batches with real padding masks); it never branches on a task's name.

Prepared data. The first load of a split reads the source files once and writes the tokens to a
cache folder, memory-mapped afterwards:
    <cache_dir>/<task>/<key>/<split>/{tokens.bin, lengths.npy, labels.npy, meta.json}
with <cache_dir> = <data_dir>/.cache unless given (`--cache-dir`, LRA_CACHE_DIR: data on read-only
shared storage keeps its cache elsewhere; one cache folder can serve several data folders, since
the key names each source file by its full path). The key hashes the task, its format version, its options and each source file's path, size and
modification time, so a changed file or option never reuses a stale cache. A cache is built in a
temporary folder and renamed into place when complete, so a half-written one is never read.

Tokens are stored raw in the smallest dtype that holds them (bytes and pixels as uint8), with
each example's real length; lra/core/data.py turns them into model ids (token + token_offset)
and a mask from those lengths, never from `id != 0`: a black pixel (0) is a real token.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Iterator, Optional

import numpy as np
from tqdm import tqdm

from lra_base.atomic import check_writable
from lra_base.errors import ConfigError, DataError, MissingDataError
from lra_base.typed import make_options

SPLITS = ("train", "val", "test")
RELEASE = "lra_release"
CACHE_DIR = ".cache"
# A split that lost more than this fraction of its items (unreadable or missing files) is broken:
# `lra data verify` says so and training refuses it; below it both say how many were skipped.
MAX_LOST_FRACTION = 0.01


@dataclass(frozen=True)
class Recipe:
    """A task's `paper` training setup (docs/lra-reference.md, training setups: the Skyformer port)."""

    seq_len: int  # tokens per input fed to the model (the ports pad 2000 -> 2048, 4000 -> 4096)
    batch_size: int
    lr: float
    warmup: int
    eval_every: int
    eval_samples: Optional[int]  # dev samples per evaluation (the port's num_eval_steps x batch)
    steps: int = 50_000


@dataclass(frozen=True)
class Smoke:
    """What the `smoke` preset runs: a small generated set (synthetic tasks) or a real-data subset."""

    seq_len: int
    generator: Optional[dict] = None  # generator options; None = the task has no generator
    # Task options of the smoke run (e.g. an easier difficulty that learns within the budget); they
    # are recorded with every run as the data options, so a smoke record says what it ran on.
    options: Optional[dict] = None
    max_train: Optional[int] = None
    max_val: Optional[int] = None
    max_test: Optional[int] = None
    # Sized so a smoke run takes about a minute on a laptop CPU with the default attention.
    # Pixel tasks keep whole images (cutting them would train on a strip with no path in it) and
    # take fewer, smaller steps instead.
    steps: int = 200
    batch_size: int = 32
    eval_every: int = 50
    lr: float = 1e-3


@dataclass
class Example:
    inputs: tuple  # one 1-D integer array of stored tokens per input
    label: int


_TASKS: dict[str, "Task"] = {}


class Task:
    """Base class of tasks. Subclasses set the class attributes and implement `examples`.

    A subclass that sets `name` is registered on definition: `tasks.get(name)` returns an instance.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _TASKS[cls.name] = cls()

    name: ClassVar[str]
    description: ClassVar[str]
    max_len: ClassVar[int]  # content tokens kept per input
    vocab_size: ClassVar[int]  # model ids are 0..vocab_size-1; 0 is padding
    num_classes: ClassVar[int]
    num_inputs: ClassVar[int] = 1
    # The layout of the tokens: (height, width) when they are an image's pixels in row-major
    # order, None for sequences. The encoder hands it to every attention alike.
    grid: ClassVar[Optional[tuple]] = None
    token_offset: ClassVar[int] = 0  # model id = stored token + offset
    storage_dtype: ClassVar[type] = np.uint8
    format_version: ClassVar[int] = 1  # bump when the tokenisation changes: invalidates caches
    recipe: ClassVar[Recipe]
    smoke: ClassVar[Smoke]
    splits: ClassVar[tuple] = SPLITS

    @dataclass
    class Options:
        """Task options (none by default)."""

    # --- to implement ---------------------------------------------------------------------

    def source_files(self, data_dir: Path, split: str, options) -> list[Path]:
        """The files `split` is read from. Raise MissingDataError (via `missing`) if absent."""
        raise NotImplementedError

    def examples(self, data_dir: Path, split: str, options) -> Iterator[Example]:
        """Read a split from the published files, yielding stored-token examples in file order.

        Raise DataError naming file and line for malformed input. Items the official data is known
        to contain broken may be skipped: count them in `self.skipped` (a dict reset per split).
        """
        raise NotImplementedError

    def how_to_get(self, data_dir: Path) -> str:
        """Commands that produce the data, for error messages."""
        return f"lra data download {self.name} --data-dir {data_dir}"

    # Synthetic tasks override this (and set smoke.generator).
    can_generate: ClassVar[bool] = False

    def generator_options(self, options) -> dict:
        """Generator options implied by the task options (e.g. which difficulty to draw), so that
        generating on demand produces the data these options will read."""
        return {}

    def generate(self, data_dir: Path, *, seed: int = 0, **options) -> None:
        raise ConfigError(f"task {self.name!r} has no generator; get the real data: {self.how_to_get(data_dir)}")

    def write_examples(self, out: Path, *, per_label: int = 4, seed: int = 0, **options) -> Path:
        """A PNG of generated examples per label (image tasks with a generator)."""
        raise ConfigError(f"task {self.name!r} has no generated images to show")

    # --- shared machinery ---------------------------------------------------------------------

    def resolve_options(self, options: dict | None):
        return make_options(self.Options, dict(options or {}), f"task {self.name!r}")

    def missing(self, data_dir: Path, looked_for: Iterable[Path]) -> MissingDataError:
        paths = "\n  ".join(str(p) for p in looked_for)
        return MissingDataError(
            f"{self.name}: data not found under {data_dir}. Looked for:\n  {paths}\n"
            f"Get it with:\n  {self.how_to_get(data_dir)}"
        )

    def cache_key(self, data_dir: Path, split: str, options) -> str:
        ident = {
            "task": self.name,
            "format": self.format_version,
            "max_len": self.max_len,
            "options": dataclasses.asdict(options),
            "sources": [
                [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
                for p in self.source_files(data_dir, split, options)
            ],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def prepared(self, data_dir: str | Path, split: str, options: dict | None = None,
                 cache_dir: str | Path | None = None) -> "PreparedSplit":
        """The split as memory-mapped arrays, from the cache (under `cache_dir`, default
        <data_dir>/.cache) or built into it now."""
        if split not in self.splits:
            raise ConfigError(f"task {self.name!r} has no split {split!r}; splits: {', '.join(self.splits)}")
        data_dir = Path(data_dir)
        opts = self.resolve_options(options)
        key = self.cache_key(data_dir, split, opts)
        cache = Path(cache_dir) if cache_dir else data_dir / CACHE_DIR
        final = cache / self.name / key / split
        if (final / "meta.json").exists():
            return PreparedSplit.open(final)
        check_writable(cache, f"the prepared {self.name}/{split} data (a cache built once)",
                       "put the cache elsewhere with --cache-dir DIR (or LRA_CACHE_DIR=DIR)")
        return self._build_cache(data_dir, split, opts, final)

    def _build_cache(self, data_dir: Path, split: str, opts, final: Path) -> "PreparedSplit":
        tmp = final.parent / f".{split}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.skipped: dict[str, int] = {}
        width = self.num_inputs * self.max_len
        lengths, labels = [], []
        row = np.zeros((self.num_inputs, self.max_len), dtype=self.storage_dtype)
        try:
            with open(tmp / "tokens.bin", "wb") as out:
                # a progress bar on a terminal only (disable=None): preparing a full split takes minutes
                for ex in tqdm(self.examples(data_dir, split, opts), desc=f"preparing {self.name}/{split}",
                               unit=" examples", mininterval=2.0, disable=None, leave=False):
                    if len(ex.inputs) != self.num_inputs:
                        raise DataError(f"{self.name}: an example has {len(ex.inputs)} inputs, expected {self.num_inputs}")
                    row[:] = 0
                    ls = []
                    for i, toks in enumerate(ex.inputs):
                        toks = np.asarray(toks)[: self.max_len]
                        row[i, : len(toks)] = toks
                        ls.append(len(toks))
                    out.write(row.tobytes())
                    lengths.append(ls)
                    labels.append(ex.label)
                out.flush()
                os.fsync(out.fileno())
            if not labels:
                raise DataError(f"{self.name}: split {split!r} is empty ({', '.join(map(str, self.source_files(data_dir, split, opts)))})")
            np.save(tmp / "lengths.npy", np.asarray(lengths, dtype=np.int32).reshape(-1, self.num_inputs))
            np.save(tmp / "labels.npy", np.asarray(labels, dtype=np.int64))
            meta = {
                "task": self.name,
                "split": split,
                "count": len(labels),
                "num_inputs": self.num_inputs,
                "max_len": self.max_len,
                "dtype": np.dtype(self.storage_dtype).name,
                "token_offset": self.token_offset,
                "skipped": dict(self.skipped),
                "options": dataclasses.asdict(opts),
                "sources": [str(p) for p in self.source_files(data_dir, split, opts)],
                "row_bytes": width * np.dtype(self.storage_dtype).itemsize,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))  # written last: completeness mark
            try:
                tmp.rename(final)
            except OSError:  # another process finished the same cache first: use theirs
                if not (final / "meta.json").exists():
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return PreparedSplit.open(final)


class PreparedSplit:
    """A tokenised split: tokens (N, I, L) memory-mapped, lengths (N, I), labels (N,)."""

    def __init__(self, tokens: np.ndarray, lengths: np.ndarray, labels: np.ndarray, meta: dict):
        self.tokens, self.lengths, self.labels, self.meta = tokens, lengths, labels, meta

    @classmethod
    def open(cls, folder: Path) -> "PreparedSplit":
        meta = json.loads((folder / "meta.json").read_text())
        shape = (meta["count"], meta["num_inputs"], meta["max_len"])
        tokens = np.memmap(folder / "tokens.bin", dtype=meta["dtype"], mode="r", shape=shape)
        meta["path"] = str(folder)
        return cls(tokens, np.load(folder / "lengths.npy"), np.load(folder / "labels.npy"), meta)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def token_offset(self) -> int:
        return self.meta["token_offset"]

    @property
    def lost(self) -> int:
        """Items of the source that could not be read (unreadable or missing files); other skip
        notes (content truncated to the task's length) lose nothing."""
        return sum(v for k, v in self.meta.get("skipped", {}).items() if k.endswith("_images"))

    def broken(self) -> str | None:
        """Why this split is unusable (more than MAX_LOST_FRACTION of its items lost), or None."""
        total = len(self) + self.lost
        if self.lost > MAX_LOST_FRACTION * total:
            return f"{self.lost} of {total} items unreadable or missing (more than {MAX_LOST_FRACTION:.0%})"
        return None


def locate(data_dir: Path, relative: str) -> tuple[Optional[Path], list[Path]]:
    """Find `relative` inside the LRA release under data_dir.

    Copies of the release differ: `DIR/lra_release/<relative>` or the doubly nested
    `DIR/lra_release/lra_release/<relative>`. Returns (found path or None, paths looked at).
    """
    candidates = [data_dir / RELEASE / relative, data_dir / RELEASE / RELEASE / relative]
    for c in candidates:
        if c.exists():
            return c, candidates
    return None, candidates
