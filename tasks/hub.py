"""Local copies of Hugging Face hub datasets: `DIR/hf/<dataset id>/`.

Two layouts are read, both with the `datasets` library and without the network:

- `save_to_disk` output: `<copy>/dataset_dict.json` and one folder per split holding
  `state.json` and `data-*.arrow` (memory-mapped, never loaded whole);
- parquet files, as the hub stores them (`<copy>/plain_text/train-00000-of-00001.parquet`) or
  one folder per split; a file's split is the first dash-separated part of its name
  (`train-00000-of-00001` -> `train`) or else the name of a folder above it.

Online, `lra data download TASK --source hub` writes the first layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator, Optional

from lra_base.errors import DataError

HUB_DIR = "hf"


def find_copy(data_dir: Path, ids: Iterable[str]) -> tuple[Optional[Path], list[Path]]:
    """The first of DIR/hf/<id> that exists, and every path looked at."""
    looked = [Path(data_dir) / HUB_DIR / i for i in ids]
    for p in looked:
        if p.is_dir():
            return p, looked
    return None, looked


def _parquet_split(path: Path, copy: Path) -> str:
    head = path.name.split(".")[0].split("-")[0]
    if head in ("train", "test", "validation", "unsupervised"):
        return head
    for parent in path.relative_to(copy).parents:
        if parent.name:
            return parent.name
    return head


def split_files(copy: Path, split: str) -> list[Path]:
    """The files holding `split` in a local copy (arrow + state.json, or parquet)."""
    folder = copy / split
    if (folder / "state.json").exists():
        return sorted(folder.glob("*.arrow")) + [folder / "state.json"]
    files = sorted(p for p in copy.rglob("*.parquet") if _parquet_split(p, copy) == split)
    return files


def available_splits(copy: Path) -> list[str]:
    names = {p.parent.name for p in copy.glob("*/state.json")}
    names |= {_parquet_split(p, copy) for p in copy.rglob("*.parquet")}
    return sorted(names)


def rows(copy: Path, split: str, columns: tuple[str, ...]) -> Iterator[tuple[int, dict]]:
    """(row number, row) for each row of `split`; DataError naming the copy on any read problem."""
    files = split_files(copy, split)
    if not files:
        raise DataError(f"{copy}: no split {split!r} in this Hugging Face copy (found: "
                        f"{', '.join(available_splits(copy)) or 'nothing readable'}); expected a save_to_disk "
                        f"folder {copy / split} or parquet files named {split}-*.parquet")
    import datasets  # optional on a bare machine (only hub copies need it): deferred on purpose

    where = files[0].parent
    try:
        if files[-1].name == "state.json":
            ds = datasets.load_from_disk(str(where))
            if isinstance(ds, datasets.DatasetDict):
                raise DataError(f"{where}: expected one split here, found a DatasetDict")
        else:
            ds = datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train", streaming=True)
        names = list(ds.features or {}) if ds.features is not None else None
    except DataError:
        raise
    except Exception as exc:  # the reader's own errors (arrow, parquet, json): name the copy
        raise DataError(f"{where}: cannot read the Hugging Face copy ({type(exc).__name__}: {exc})") from None
    if names is not None:
        missing = [c for c in columns if not any(c_ == c or c_ in _ALIASES.get(c, ()) for c_ in names)]
        if missing:
            raise DataError(f"{where}: column(s) {missing} missing; the copy has {names}")
    it = iter(ds)
    n = 0
    while True:
        try:
            row = next(it)
        except StopIteration:
            return
        except Exception as exc:
            raise DataError(f"{where}: row {n}: cannot read ({type(exc).__name__}: {exc})") from None
        yield n, row
        n += 1


_ALIASES = {"img": ("image",)}


def column(row: dict, name: str, where: Path, n: int):
    for key in (name, *_ALIASES.get(name, ())):
        if key in row:
            return row[key]
    raise DataError(f"{where}: row {n}: no column {name!r} (has {sorted(row)})")
