"""Downloads for `lra data download`: resumable HTTP, checksums, atomic extraction.

A download goes to `DIR/downloads/<file>.part` and is renamed to `DIR/downloads/<file>` only when
every byte arrived and the checksum (where one is known) matches, so a half-finished download is
never taken for a finished one; running the command again resumes the `.part` with an HTTP Range
request. Extraction unpacks into a temporary folder under DIR and moves the finished top-level
folders into place (`DIR/lra_release`, `DIR/aclImdb`, `DIR/cifar-10-batches-py`); a marker file
`DIR/downloads/<file>.extracted` is written last.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from lra_base.errors import ConfigError, DataError
from tasks.hub import HUB_DIR
from tasks.retrieval import FILES, HUB_FOLDER

DOWNLOADS = "downloads"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    label: str
    url: str
    filename: str
    md5: Optional[str]  # None where no trustworthy checksum is published
    provides: tuple  # top-level folders it yields under DIR
    release: bool = False  # the LRA release: its children are merged into DIR/lra_release


# Checksums: torchvision's CIFAR10.tgz_md5 and torchtext's IMDB MD5. The LRA release publishes none;
# its gzip CRC and the expected folders are checked instead.
LRA_RELEASE = Archive("the LRA release (~8 GB)", "https://storage.googleapis.com/long-range-arena/lra_release.gz",
                      "lra_release.gz", None, ("lra_release",), release=True)
ACLIMDB = Archive("IMDb reviews (aclImdb, 84 MB)", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                  "aclImdb_v1.tar.gz", "7c2ac02c03563afcf9b574c7e56c153a", ("aclImdb",))
CIFAR10 = Archive("CIFAR-10 python batches (163 MB)", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                  "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", ("cifar-10-batches-py",))
RELEASE_CHILDREN = ("listops-1000", "tsv_data", "pathfinder32", "pathfinder64", "pathfinder128", "pathfinder256")

# task -> {source: what to fetch}; the first source is the default
SOURCES = {
    "listops": {"release": LRA_RELEASE},
    "retrieval": {"release": LRA_RELEASE, "hub": ("OpenNLPLab/lra", "files")},
    "pathfinder": {"release": LRA_RELEASE},
    "pathx": {"release": LRA_RELEASE},
    "text": {"archive": ACLIMDB, "hub": ("stanfordnlp/imdb", "datasets")},
    "image": {"archive": CIFAR10, "hub": ("uoft-cs/cifar10", "datasets")},
}


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, *, md5: Optional[str] = None, progress: bool = True, timeout: float = 60,
          label: str = "") -> Path:
    """Download url to dest, resuming dest.part; verify md5; rename into place when complete."""
    dest = Path(dest)
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "lra-suite", **({"Range": f"bytes={have}-"} if have else {})})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the .part may already be whole
            total = _total_from_content_range(exc.headers.get("Content-Range"))
            if total == have:
                return _finish(part, dest, md5, url)
        raise DataError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DataError(f"cannot reach {url} ({getattr(exc, 'reason', exc)}); check the network and run the "
                        f"command again{' (it resumes)' if have else ''}") from None
    with response:
        status = response.status
        if status == 206:
            start = _start_from_content_range(response.headers.get("Content-Range"))
            if start != have:
                raise DataError(f"{url}: the server resumed at byte {start}, not {have}; delete {part} and retry")
            total = _total_from_content_range(response.headers.get("Content-Range"))
            mode = "ab"
        else:  # 200: the server ignored the range (or there was none): start over
            have, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        bar = None
        if progress:
            bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=label or dest.name)
        got = have
        try:
            with open(part, mode) as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    got += len(block)
                    if bar:
                        bar.update(len(block))
        except (OSError, urllib.error.URLError, http.client.HTTPException) as exc:
            raise DataError(f"download of {url} interrupted at {got:,} bytes ({exc}); run the same command "
                            f"again to resume from {part}") from None
        finally:
            if bar:
                bar.close()
    if total is not None and got != total:
        raise DataError(f"download of {url} stopped at {got:,} of {total:,} bytes; run the same command again to "
                        f"resume from {part}")
    return _finish(part, dest, md5, url)


def _finish(part: Path, dest: Path, md5: Optional[str], url: str) -> Path:
    if md5:
        digest = md5sum(part)
        if digest != md5:
            part.unlink()
            raise DataError(f"{url}: checksum mismatch (md5 {digest}, expected {md5}); the corrupt download was "
                            "removed, run the command again to fetch it afresh")
    os.replace(part, dest)
    return dest


def _start_from_content_range(value: Optional[str]) -> Optional[int]:
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value or "")
    return int(m.group(1)) if m else None


def _total_from_content_range(value: Optional[str]) -> Optional[int]:
    m = re.search(r"/(\d+)\s*$", value or "")
    return int(m.group(1)) if m else None


def extract(archive: Archive, path: Path, data_dir: Path, *, force: bool = False, log=print) -> list[Path]:
    """Unpack a downloaded archive under data_dir; returns the folders put in place."""
    data_dir = Path(data_dir)
    marker = data_dir / DOWNLOADS / f"{archive.filename}.extracted"
    if marker.exists() and not force and all((data_dir / p).exists() for p in archive.provides):
        log(f"already extracted: {', '.join(str(data_dir / p) for p in archive.provides)}")
        return [data_dir / p for p in archive.provides]
    tmp = data_dir / f".extract-{archive.filename}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        try:
            with tarfile.open(path, "r|*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            bad = Path(path).with_name(Path(path).name + ".corrupt")
            os.replace(path, bad)
            raise DataError(f"{path}: cannot be unpacked ({type(exc).__name__}: {exc}); it was moved to {bad}. "
                            "Run the command again to download it afresh") from None
        placed = []
        if archive.release:
            src = _release_root(tmp)
            if src is None:
                raise DataError(f"{path}: no LRA release folders ({', '.join(RELEASE_CHILDREN)}) inside")
            target = data_dir / "lra_release"
            target.mkdir(parents=True, exist_ok=True)
            for child in sorted(src.iterdir()):
                placed += _move(child, target / child.name, force, log)
        else:
            for name in archive.provides:
                if not (tmp / name).exists():
                    raise DataError(f"{path}: expected a top-level folder {name!r} inside")
                placed += _move(tmp / name, data_dir / name, force, log)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    marker.write_text(json.dumps({"archive": str(path), "placed": [str(p) for p in placed], "at": time.time()}))
    return placed


def _release_root(tmp: Path) -> Optional[Path]:
    """The folder holding listops-1000/, tsv_data/, pathfinder*/ (copies nest it differently)."""
    for folder in [tmp, *sorted(p for p in tmp.rglob("*") if p.is_dir())]:
        if any((folder / c).is_dir() for c in RELEASE_CHILDREN):
            return folder
    return None


def _move(src: Path, dst: Path, force: bool, log) -> list[Path]:
    if dst.exists():
        if not force:
            log(f"kept the existing {dst} (pass --force to replace it with the downloaded copy)")
            return []
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    return [dst]


def download(task: str, data_dir: Path, *, source: Optional[str] = None, url: Optional[str] = None,
             force: bool = False, progress: bool = True, log=print) -> list[Path]:
    """Fetch what `task` needs from `source` (its default if None) into data_dir."""
    if task not in SOURCES:
        raise ConfigError(f"no download for task {task!r}; tasks: {', '.join(SOURCES)}")
    choices = SOURCES[task]
    source = source or next(iter(choices))
    if source not in choices:
        raise ConfigError(f"task {task!r} downloads from {', '.join(choices)}, not {source!r}")
    what = choices[source]
    data_dir = Path(data_dir)
    if isinstance(what, Archive):
        dest = data_dir / DOWNLOADS / what.filename
        log(f"{task}: {what.label} from {url or what.url}")
        path = fetch(url or what.url, dest, md5=what.md5, progress=progress, label=what.filename)
        if what.md5:
            log(f"checksum OK (md5 {what.md5})")
        return extract(what, path, data_dir, force=force, log=log)
    repo, kind = what
    return _download_hub(repo, kind, data_dir, force=force, log=log)


def _download_hub(repo: str, kind: str, data_dir: Path, *, force: bool, log) -> list[Path]:
    """Online only: a `save_to_disk` copy (datasets) or the AAN files (huggingface_hub)."""
    target = data_dir / HUB_DIR / repo
    if kind == "files":
        # huggingface_hub comes with `datasets`, optional on a bare machine: deferred on purpose
        from huggingface_hub import hf_hub_download

        out = []
        for name in FILES.values():
            log(f"retrieval: {repo}/{HUB_FOLDER}/{name}")
            out.append(Path(hf_hub_download(repo_id=repo, repo_type="dataset", filename=f"{HUB_FOLDER}/{name}",
                                            local_dir=str(target))))
        return out
    if target.exists() and not force:
        log(f"kept the existing {target} (pass --force to download it again)")
        return [target]
    import datasets  # optional on a bare machine (a hub download needs it): deferred on purpose

    log(f"{repo}: downloading with datasets.load_dataset")
    ds = datasets.load_dataset(repo)
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.save_to_disk(str(tmp))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return [target]
