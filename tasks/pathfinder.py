"""Pathfinder (32x32) and Path-X (128x128): are the two markers connected by one dashed path?

Data: the LRA release, or the same layout generated locally by `tasks/snakes.py`:

    lra_release/pathfinder32/<difficulty>/imgs/<batch>/sample_<k>.png     (Path-X: pathfinder128)
    lra_release/pathfinder32/<difficulty>/metadata/<batch>.npy

The metadata files are plain text despite the `.npy` name, one line per image, space-separated:
field 0 = the image folder (`imgs/<batch>`), field 1 = the file name, field 3 = the label (0/1),
e.g. `imgs/0 sample_0.png 0 0 1.0 6 2 2 0.5 1 1`. Difficulties: curv_baseline (snakes of 6
dashes), curv_contour_length_9, curv_contour_length_14 (the LRA task, the default; option
`difficulty`). The release has no splits: like LRA, all images of a difficulty are split 80/10/10
by a seeded permutation (option `split_seed`, recorded with the prepared data).

Tokens are the grayscale pixel values 0..255 in row-major order; every pixel is a real token
(lengths are always full, so the mask is all True). The ports' `token != 0` mask treated black
pixels, most of the image, as padding: not here.

Known broken items: `pathfinder32/curv_baseline/imgs/0/sample_172.png` is an empty file in the
release. Unreadable or missing images are skipped with a warning and counted (`skipped` in the
prepared split's meta); `lra data verify` flags a split where more than 1% were skipped.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from lra_base.errors import ConfigError, DataError, did_you_mean
from tasks.base import RELEASE, Example, Recipe, Smoke, Task, locate
from tasks.snakes import DIFFICULTIES, MANIFEST, Settings, example_grid, generate as draw_dataset, settings_for

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
PARALLEL_MIN = 4000  # decode in worker processes from this many images on


def read_metadata(path: Path) -> Iterator[tuple[int, str, str, int]]:
    """(line number, image folder, file name, label) for each line of a metadata file."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text metadata file ({exc.reason} at byte {exc.start}); "
                        "expected lines like 'imgs/0 sample_0.png 0 0 ...'") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue  # blank lines carry nothing
        if len(fields) < 4:
            raise DataError(f"{path}:{n}: expected at least 4 space-separated fields "
                            f"(folder, file, index, label), got {len(fields)}: {line[:80]!r}")
        folder, name, label = fields[0], fields[1], fields[3]
        if not folder.startswith("imgs") or ".." in Path(folder).parts or Path(folder).is_absolute():
            raise DataError(f"{path}:{n}: field 1 must be an image folder like 'imgs/0', got {folder!r}")
        if "/" in name or "\\" in name or not name.lower().endswith(".png"):
            raise DataError(f"{path}:{n}: field 2 must be a PNG file name like 'sample_0.png', got {name!r}")
        if label not in ("0", "1"):
            raise DataError(f"{path}:{n}: field 4 (label) must be 0 or 1, got {label!r}")
        yield n, folder, name, int(label)


def _metadata_order(p: Path):
    return (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem)


def split_indices(n: int, split: str, seed: int) -> np.ndarray:
    """The (sorted) indices of `split` in a seeded 80/10/10 split of n items."""
    perm = np.random.default_rng([seed, 801010]).permutation(n)
    a, b = int(n * SPLIT_FRACTIONS[0]), int(n * (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1]))
    part = {"train": perm[:a], "val": perm[a:b], "test": perm[b:]}[split]
    return np.sort(part)


def read_image(path: str, resolution: int) -> tuple[np.ndarray | None, str]:
    """Pixels (resolution^2,) uint8, or None and why (missing / unreadable / wrong size)."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.size != (resolution, resolution):
                return None, f"wrong size {im.size[0]}x{im.size[1]}, expected {resolution}x{resolution}"
            if im.mode != "L":
                im = im.convert("L")  # the release is 8-bit grayscale; anything else is made so
            return np.asarray(im, dtype=np.uint8).reshape(-1), ""
    except FileNotFoundError:
        return None, "missing"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"


def _read_chunk(job):
    paths, resolution = job
    return [read_image(p, resolution) for p in paths]


class _Pathfinder(Task):
    """Shared by Pathfinder (32) and Path-X (128); subclasses set the resolution."""

    resolution: int
    vocab_size = 256
    num_classes = 2
    token_offset = 0
    storage_dtype = np.uint8
    can_generate = True

    @dataclass
    class Options:
        difficulty: str = "curv_contour_length_14"
        split_seed: int = 0  # seeds the 80/10/10 split of all images

        def __post_init__(self):
            if self.difficulty not in DIFFICULTIES:
                raise ValueError(f"unknown difficulty {self.difficulty!r}. Valid: {', '.join(DIFFICULTIES)}")

    @property
    def folder(self) -> str:
        return f"pathfinder{self.resolution}"

    def _root(self, data_dir: Path, options) -> Path:
        rel = f"{self.folder}/{options.difficulty}"
        root, looked = locate(Path(data_dir), rel)
        if root is None or not (root / "metadata").is_dir():
            raise self.missing(Path(data_dir), [p / "metadata" for p in looked])
        manifest = root / MANIFEST
        if manifest.exists():
            try:
                complete = json.loads(manifest.read_text()).get("complete", False)
            except (OSError, ValueError):
                complete = False
            if not complete:
                raise DataError(f"{root}: generation did not finish ({manifest} says incomplete). Resume it with:\n"
                                f"  lra data generate {self.name} --data-dir {data_dir} "
                                f"--difficulty {options.difficulty} (the same settings as before)")
        return root

    def source_files(self, data_dir, split, options):
        root = self._root(Path(data_dir), options)
        files = sorted((root / "metadata").glob("*.npy"), key=_metadata_order)
        if not files:
            raise self.missing(Path(data_dir), [root / "metadata" / "<batch>.npy"])
        return files + ([root / MANIFEST] if (root / MANIFEST).exists() else [])

    def entries(self, data_dir: Path, options) -> list[tuple[str, int]]:
        """(image path, label) of every image of the difficulty, in metadata order."""
        files = [f for f in self.source_files(data_dir, "train", options) if f.suffix == ".npy"]
        root = files[0].parent.parent
        out = []
        for f in files:
            for _, folder, name, label in read_metadata(f):
                out.append((str(root / folder / name), label))
        if not out:
            raise DataError(f"{root / 'metadata'}: the metadata files list no images")
        return out

    def examples(self, data_dir, split, options) -> Iterator[Example]:
        items = self.entries(Path(data_dir), options)
        chosen = [items[i] for i in split_indices(len(items), split, options.split_seed)]
        paths = [p for p, _ in chosen]
        size = 1000
        jobs = [(paths[i : i + size], self.resolution) for i in range(0, len(paths), size)]
        reported = 0
        if len(paths) >= PARALLEL_MIN and (os.cpu_count() or 1) > 1:
            ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
            pool = ctx.Pool(min(os.cpu_count() or 1, 8))
            results = pool.imap(_read_chunk, jobs)  # ordered
        else:
            pool, results = None, map(_read_chunk, jobs)
        try:
            k = 0
            for chunk in results:
                for pixels, why in chunk:
                    path, label = chosen[k]
                    k += 1
                    if pixels is None:
                        if why.startswith("wrong size"):
                            raise DataError(f"{path}: {why} (is this {self.folder} data?)")
                        kind = "missing_images" if why == "missing" else "unreadable_images"
                        self.skipped[kind] = self.skipped.get(kind, 0) + 1
                        if reported < 5:
                            print(f"[lra] warning: skipping {path}: {why}", file=sys.stderr)
                        reported += 1
                        continue
                    yield Example((pixels,), label)
        finally:
            if pool is not None:
                pool.terminate()

    def how_to_get(self, data_dir):
        return (f"lra data generate {self.name} --data-dir {data_dir}    (draw it locally, tasks/snakes.py)\n"
                f"  lra data download {self.name} --data-dir {data_dir}    (the published LRA release, ~8 GB)")

    def generator_options(self, options) -> dict:
        return {"difficulty": options.difficulty}

    def generate(self, data_dir, *, seed=0, images=200_000, difficulty="curv_contour_length_14", per_batch=1000,
                 workers=None, force=False, progress=False, **settings):
        """Draw `images` images of `difficulty` into DIR/lra_release/pathfinder<res>/<difficulty>/.

        `settings` override the generator's per-resolution settings (tasks/snakes.py `Settings`).
        """
        known = {f.name for f in dataclasses.fields(Settings)} - {"size"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"{self.name} generator has no option {unknown[0]!r}{did_you_mean(unknown[0], known)}. "
                              f"Options: images, difficulty, per_batch, workers, and the settings "
                              f"{', '.join(sorted(known))}")
        s = settings_for(self.resolution, difficulty, **settings)
        root = Path(data_dir) / RELEASE / self.folder / difficulty
        draw_dataset(root, s, images=images, seed=seed, per_batch=per_batch, workers=workers, force=force,
                     progress=progress)
        return root


    def write_examples(self, out, *, per_label=4, seed=0, difficulty="curv_contour_length_14"):
        """Generated positives (top row) over negatives (bottom row), upscaled for viewing."""
        return example_grid(self.resolution, Path(out), per_label=per_label, seed=seed, difficulty=difficulty)


class Pathfinder(_Pathfinder):
    name = "pathfinder"
    description = "Pathfinder: are the two dots joined by one dashed path? 32x32 pixels, 1K tokens"
    resolution = 32
    max_len = 32 * 32
    grid = (32, 32)
    recipe = Recipe(seq_len=1024, batch_size=128, lr=2e-4, warmup=312, eval_every=500, eval_samples=156 * 128)
    # The smoke set is the easiest the generator draws, so that a minute of CPU training shows
    # learning (the LRA difficulty stays at chance for thousands of steps): curv_baseline, each
    # target a single dash, no distractors, markers of radius 3. "Connected" is then "both markers
    # on one dash", which a model can tell from how much marker ink there is: a pipeline check, not
    # the LRA task. The records say so (data options and generator settings in their config).
    smoke = Smoke(seq_len=1024, options={"difficulty": "curv_baseline"},
                  generator=dict(images=600, per_batch=100, contour_length=1, distractors=0, marker_radius=3.0),
                  steps=100, batch_size=16, eval_every=25, lr=3e-3)


class PathX(_Pathfinder):
    """Path-X: Pathfinder at 128x128 (16K tokens).

    Not in the PolaFormer/Skyformer tables: its `paper` preset is Pathfinder's recipe at the full
    16,384 tokens. The `smoke` preset only checks the plumbing on CPU: 40 generated images, whole,
    a few steps of batch 2 (minutes with a quadratic attention at 16K tokens on a CPU).
    """

    name = "pathx"
    description = "Path-X: Pathfinder at 128x128 pixels, 16K tokens"
    resolution = 128
    max_len = 128 * 128
    grid = (128, 128)
    recipe = Recipe(seq_len=16384, batch_size=128, lr=2e-4, warmup=312, eval_every=500, eval_samples=156 * 128)
    smoke = Smoke(seq_len=16384, generator=dict(images=40, per_batch=20), steps=6, batch_size=2, eval_every=3,
                  max_val=4, max_test=4)
