"""Retrieval: does one ACL Anthology (AAN) paper cite the other? Two documents, 4K bytes each.

Data: `lra_release/tsv_data/new_aan_pairs.{train,eval,test}.tsv` (147,086 / 18,090 / 17,437
pairs; the `eval` file is the validation split), or the same files in the hub copy
`hf/OpenNLPLab/lra/data/aan/`. No header; five tab-separated columns:

    label   id1   id2   text1   text2

read with quoting OFF (LRA's reader sets `use_quote_delim=False`; quote characters inside the
papers must stay literal, or rows are mangled). Label is 0/1 (written `0`, `1`, `0.0` or `1.0`).

Tokens: each document's UTF-8 bytes cut to 4,000, model id = byte + 1 (0 is padding), 257 ids.
The two documents go through one shared encoder (the model's dual-input head: [u, v, u*v, u-v]).
Rows are streamed from the file into the memory-mapped cache (~1.2 GB at full size): the ids never
sit in RAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from lra_base.errors import DataError
from tasks import hub
from tasks.base import Example, Recipe, Smoke, Task, locate

FOLDER = "tsv_data"
FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}
HUB_IDS = ("OpenNLPLab/lra",)
HUB_FOLDER = "data/aan"
SOURCES = ("auto", "release", "hub")


def read_tsv(path: Path, max_bytes: int | None = None) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(line number, label, text1, text2) per row of an AAN pairs file, texts as raw bytes.

    Lines are split on tabs and nothing else (no quoting), exactly as LRA's reader does.
    """
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({exc.strerror or exc})") from None
    with f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue  # a blank (e.g. final) line carries nothing
            fields = line.split(b"\t")
            if len(fields) != 5:
                raise DataError(f"{path}:{n}: expected 5 tab-separated fields (label, id1, id2, text1, text2), "
                                f"got {len(fields)}")
            label = _label(fields[0])
            if label is None:
                raise DataError(f"{path}:{n}: label must be 0 or 1, got {fields[0][:40]!r}")
            if not fields[1].strip() or not fields[2].strip():
                raise DataError(f"{path}:{n}: empty paper id")
            t1, t2 = fields[3], fields[4]
            if max_bytes is not None:
                t1, t2 = t1[:max_bytes], t2[:max_bytes]
            yield n, label, t1, t2


def _label(field: bytes):
    try:
        value = float(field.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if math.isnan(value) or value not in (0.0, 1.0):
        return None
    return int(value)


class Retrieval(Task):
    name = "retrieval"
    description = "Retrieval: AAN citation link between two papers, 2 x 4K byte tokens"
    max_len = 4000
    vocab_size = 257
    num_classes = 2
    num_inputs = 2
    token_offset = 1
    storage_dtype = np.uint8
    recipe = Recipe(seq_len=4096, batch_size=16, lr=2e-4, warmup=800, eval_every=1000, eval_samples=300 * 16)
    smoke = Smoke(seq_len=128, max_train=2048, max_val=256, max_test=256)  # x 2 documents

    @dataclass
    class Options:
        source: str = "auto"  # auto | release | hub

        def __post_init__(self):
            if self.source not in SOURCES:
                raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {self.source!r}")

    def source_files(self, data_dir, split, options):
        data_dir = Path(data_dir)
        looked = []
        if options.source in ("auto", "release"):
            folder, cands = locate(data_dir, FOLDER)
            if folder is not None and (folder / FILES[split]).is_file():
                return [folder / FILES[split]]
            looked += [c / FILES[split] for c in cands]
        if options.source in ("auto", "hub"):
            for i in HUB_IDS:
                p = data_dir / hub.HUB_DIR / i / HUB_FOLDER / FILES[split]
                if p.is_file():
                    return [p]
                looked.append(p)
        raise self.missing(data_dir, looked)

    def examples(self, data_dir, split, options) -> Iterator[Example]:
        (path,) = self.source_files(data_dir, split, options)
        for _, label, t1, t2 in read_tsv(path, self.max_len + 1):
            if len(t1) > self.max_len or len(t2) > self.max_len:
                self.skipped["truncated_documents"] = (self.skipped.get("truncated_documents", 0)
                                                       + (len(t1) > self.max_len) + (len(t2) > self.max_len))
            yield Example((np.frombuffer(t1[: self.max_len], np.uint8), np.frombuffer(t2[: self.max_len], np.uint8)),
                          label)

    def how_to_get(self, data_dir):
        return (f"lra data download retrieval --data-dir {data_dir}                (the LRA release, ~8 GB)\n"
                f"  lra data download retrieval --data-dir {data_dir} --source hub   (OpenNLPLab/lra, the AAN files only)")
