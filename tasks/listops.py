"""ListOps (Nangia & Bowman, 2018; LRA version): evaluate nested MAX/MIN/MED/SM expressions.

Data: `lra_release/listops-1000/basic_{train,val,test}.tsv` (96,000 / 2,000 / 2,000 rows),
tab-separated with header `Source\\tTarget`; Source is the expression, Target its value 0-9:

    ( ( ( [MAX 2 ) 9 ) ] )    ->  9

Tokenisation (the fixed official one): rename `]` to `X`, delete `(` and `)`, split on
whitespace. Ids: 0 pad, 1 unknown, then the 4 operators, `X` and the 10 digits (17 ids). The
older tokeniser that dropped the brackets made the task unsolvable (LRA issues 6, 14, 20).

Generator: the official algorithm (lra_benchmarks/data/listops.py), written anew: a node above
the maximum depth is a digit with probability 0.75, else an operator with 2..max_args children,
the operator drawn after its children; keep trees with min_length < length < max_length tokens,
deduplicate. It runs in parallel over cores in fixed chunks whose random streams depend only on
(seed, chunk), so the output is the same whatever the number of workers.
"""

from __future__ import annotations

import csv  # the writer: the official generator's dialect
import io
import json
import multiprocessing as mp
import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from tqdm import tqdm

from lra_base.atomic import atomic_write
from lra_base.errors import AlreadyDone, ConfigError, DataError
from tasks.base import Example, Recipe, Smoke, Task, locate

OPERATORS = ("[MIN", "[MAX", "[MED", "[SM")
END = "]"
VOCAB = {"<pad>": 0, "<unk>": 1, "[MAX": 2, "[MIN": 3, "[MED": 4, "[SM": 5, "X": 6}
VOCAB.update({str(d): 7 + d for d in range(10)})
FOLDER = "listops-1000"
FILES = {"train": "basic_train.tsv", "val": "basic_val.tsv", "test": "basic_test.tsv"}
HEADER = ["Source", "Target"]
OFFICIAL_SIZES = {"train": 96_000, "val": 2_000, "test": 2_000}


def tokenizer():
    """The official ListOps tokenisation as a `tokenizers` pipeline."""
    tok = Tokenizer(models.WordLevel(vocab=VOCAB, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Replace("]", "X"), normalizers.Replace("(", ""), normalizers.Replace(")", "")]
    )
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


def read_tsv(path: Path) -> Iterator[tuple[int, str, int]]:
    """(line number, Source, Target) for each row of a ListOps TSV; DataError on malformed rows.

    Fields are split on tabs only (no quoting, as the release is written); each line must be UTF-8.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with f:
        for line, raw in enumerate(f, 1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            row = text.split("\t")
            if line == 1:
                if row != HEADER:
                    raise DataError(f"{path}:1: expected the header 'Source<TAB>Target', got {text[:60]!r}")
                continue
            if len(row) != 2:
                raise DataError(f"{path}:{line}: expected 2 tab-separated fields (Source, Target), got {len(row)}")
            source, target = row
            if not source.strip():
                raise DataError(f"{path}:{line}: empty Source")
            if "\x00" in source or "\r" in source:
                raise DataError(f"{path}:{line}: Source contains a NUL byte or a stray carriage return")
            try:
                label = int(target)
            except ValueError:
                raise DataError(f"{path}:{line}: Target must be an integer 0-9, got {target!r}") from None
            if not 0 <= label <= 9:
                raise DataError(f"{path}:{line}: Target must be an integer 0-9, got {label}")
            yield line, source, label
        if f.tell() == 0:
            raise DataError(f"{path}:1: empty file; expected the header 'Source<TAB>Target'")


def write_tsv(path: Path, rows) -> None:
    """Write (source, target) rows in the release's format, atomically."""

    def write(f):
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text, delimiter="\t")  # the official generator's writer (\r\n lines)
        writer.writerow(HEADER)
        writer.writerows(rows)
        text.flush()
        text.detach()

    atomic_write(path, write)


# --- generator -----------------------------------------------------------------------------------

VALUE_P = 0.25  # probability that a node above max depth is an operator


class _TooLong(Exception):
    pass


def _node(rng: random.Random, depth: int, max_depth: int, max_args: int, budget: list) -> tuple[str, int, int]:
    """One random subtree: (serialised text, token length, value).

    `budget` holds the tokens still allowed; a tree that would reach max_length is abandoned
    early. That changes nothing about the accepted trees (length only grows), only the time spent
    on rejected ones.
    """
    r = rng.random() if depth < max_depth else 1.0
    if r > VALUE_P:
        value = rng.choice(range(10))
        budget[0] -= 1
        if budget[0] <= 0:
            raise _TooLong
        return str(value), 1, value
    budget[0] -= 2
    n_args = rng.randint(2, max_args)
    texts, values, length = [], [], 2
    for _ in range(n_args):
        t, n, v = _node(rng, depth + 1, max_depth, max_args, budget)
        texts.append(t)
        values.append(v)
        length += n
    op = rng.choice(OPERATORS)
    if op == "[MIN":
        value = min(values)
    elif op == "[MAX":
        value = max(values)
    elif op == "[MED":
        value = int(np.median(values))
    else:
        value = sum(values) % 10
    # The official serialisation nests left pairs: ( ( ( op a ) b ) ... ] ).
    text = "( " * (n_args + 1) + op + " " + " ) ".join(texts) + " ) ] )"
    return text, length, value


def _chunk(args) -> list[tuple[str, int]]:
    seed, index, count, min_length, max_length, max_depth, max_args = args
    rng = random.Random(f"listops-{seed}-{index}")
    out = []
    while len(out) < count:
        try:
            text, length, value = _node(rng, 1, max_depth, max_args, [max_length])
        except _TooLong:
            continue
        if min_length < length < max_length:
            out.append((text, value))
    return out


def generate_rows(total: int, *, seed: int = 0, min_length: int = 500, max_length: int = 2000,
                  max_depth: int = 10, max_args: int = 10, workers: int | None = None,
                  chunk: int = 500, progress: bool = False) -> list[tuple[str, int]]:
    """`total` distinct (expression, value) rows, deterministic in `seed` whatever `workers` is."""
    if not 0 <= min_length < max_length:
        raise ConfigError(f"need 0 <= min_length < max_length, got {min_length}, {max_length}")
    if max_depth < 1 or max_args < 2:
        raise ConfigError(f"need max_depth >= 1 and max_args >= 2, got {max_depth}, {max_args}")
    workers = workers or os.cpu_count() or 1
    rows, seen, index = [], set(), 0
    bar = None
    if progress:
        bar = tqdm(total=total, desc="listops", unit="expr")
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context()
    with ctx.Pool(workers) if workers > 1 else _Serial() as pool:
        while len(rows) < total:
            n_chunks = max(1, -(-(total - len(rows)) // chunk))
            jobs = [(seed, index + i, chunk, min_length, max_length, max_depth, max_args) for i in range(n_chunks)]
            index += n_chunks
            for part in pool.imap(_chunk, jobs):  # ordered: the result does not depend on timing
                for text, value in part:
                    if text not in seen and len(rows) < total:
                        seen.add(text)
                        rows.append((text, value))
                        if bar:
                            bar.update(1)
    if bar:
        bar.close()
    return rows


def _manifest(folder: Path) -> dict | None:
    """The settings a finished generation wrote (GENERATED.json comes last), or None."""
    try:
        return json.loads((folder / "GENERATED.json").read_text())
    except (OSError, ValueError):
        return None


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, jobs):
        return map(fn, jobs)


# --- the task ------------------------------------------------------------------------------------


class ListOps(Task):
    name = "listops"
    description = "ListOps: value (0-9) of a nested MAX/MIN/MED/SM expression, 2K tokens"
    max_len = 2000
    vocab_size = len(VOCAB)
    num_classes = 10
    recipe = Recipe(seq_len=2048, batch_size=32, lr=1e-4, warmup=1000, eval_every=500, eval_samples=62 * 32)
    smoke = Smoke(seq_len=256, generator=dict(train=2000, val=256, test=256, min_length=30, max_length=250))
    can_generate = True

    def source_files(self, data_dir, split, options):
        folder, looked = locate(Path(data_dir), FOLDER)
        if folder is None or not (folder / FILES[split]).is_file():
            files = [p / FILES[split] for p in looked]
            raise self.missing(Path(data_dir), files)
        return [folder / FILES[split]]

    def how_to_get(self, data_dir):
        return (f"lra data generate listops --data-dir {data_dir}    (generate locally, official algorithm)\n"
                f"  lra data download listops --data-dir {data_dir}    (the published LRA release, ~8 GB)")

    def examples(self, data_dir, split, options) -> Iterator[Example]:
        (path,) = self.source_files(data_dir, split, options)
        tok = tokenizer()
        unk = VOCAB["<unk>"]
        batch = []

        def flush():
            for (line, _, label), enc in zip(batch, tok.encode_batch([s for _, s, _ in batch])):
                ids = np.asarray(enc.ids, dtype=np.uint8)
                if (ids == unk).any():
                    self.skipped["unknown_tokens"] = self.skipped.get("unknown_tokens", 0) + int((ids == unk).sum())
                if len(ids) > self.max_len:
                    self.skipped["truncated"] = self.skipped.get("truncated", 0) + 1
                yield Example((ids,), label)
            batch.clear()

        for row in read_tsv(path):
            batch.append(row)
            if len(batch) == 4096:
                yield from flush()
        yield from flush()

    def generate(self, data_dir, *, seed=0, train=96_000, val=2_000, test=2_000, min_length=500,
                 max_length=2000, max_depth=10, max_args=10, workers=None, force=False, progress=False):
        """Write basic_{train,val,test}.tsv under DIR/lra_release/listops-1000/."""
        folder = Path(data_dir) / "lra_release" / FOLDER
        sizes = {"train": train, "val": val, "test": test}
        settings = dict(seed=seed, min_length=min_length, max_length=max_length, max_depth=max_depth,
                        max_args=max_args, **sizes)
        existing = [folder / f for f in FILES.values() if (folder / f).exists()]
        if existing and not force:
            if len(existing) == len(FILES) and _manifest(folder) == {"generator": "lra listops", **settings}:
                raise AlreadyDone(f"{folder} is already complete ({train} / {val} / {test} examples, the same "
                                  "settings): nothing to do (--force generates it again)")
            raise ConfigError(f"{existing[0]} already exists (other settings, or not made by this generator); "
                              f"pass --force to overwrite the ListOps files in {folder}")
        if min(sizes.values()) < 1:
            raise ConfigError(f"every split needs at least one example, got {sizes}")
        rows = generate_rows(train + val + test, seed=seed, min_length=min_length, max_length=max_length,
                             max_depth=max_depth, max_args=max_args, workers=workers, progress=progress)
        start = 0
        for split in ("train", "val", "test"):
            write_tsv(folder / FILES[split], rows[start : start + sizes[split]])
            start += sizes[split]
        (folder / "GENERATED.json").write_text(json.dumps({"generator": "lra listops", **settings}, indent=1))
        return folder
