"""Downloads against a real HTTP server on 127.0.0.1 serving archives built here: Range resume
after an interrupted transfer, checksums, atomic extraction, and the loaders reading the result."""

import hashlib
import http.server
import io
import tarfile
import threading

import numpy as np
import pytest

import tasks
from lra import cli
from lra_base.errors import DataError
from lra_fixtures import aan_rows, cifar_batches, imdb_reviews, write_aclimdb_tar, write_cifar_tar
from tasks.download import ACLIMDB, CIFAR10, Archive, extract, fetch


class Server:
    """Serves `files` (name -> bytes) with HTTP Range support; `cut[name] = n` drops the connection
    after n bytes of the next response for that file (once)."""

    def __init__(self):
        self.files, self.cut, self.requests = {}, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                name = self.path.lstrip("/")
                outer.requests.append((name, self.headers.get("Range")))
                if name not in outer.files:
                    self.send_error(404)
                    return
                data = outer.files[name]
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                limit = outer.cut.pop(name, None)
                self.wfile.write(body if limit is None else body[:limit])
                if limit is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server):
    data = np.random.default_rng(0).bytes(3_000_000)
    server.files["big.bin"] = data
    server.cut["big.bin"] = 1_000_000
    dest = tmp_path / "downloads" / "big.bin"
    with pytest.raises(DataError, match="run the same command again"):
        fetch(f"{server.url}/big.bin", dest, md5=md5(data), progress=False)
    part = dest.with_name("big.bin.part")
    assert not dest.exists() and part.stat().st_size == 1_000_000  # never mistaken for a finished file
    fetch(f"{server.url}/big.bin", dest, md5=md5(data), progress=False)
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("big.bin", "bytes=1000000-")


def test_a_part_that_is_already_whole_is_finished_and_a_bad_checksum_removed(tmp_path, server):
    data = b"x" * 5000
    server.files["f.bin"] = data
    dest = tmp_path / "f.bin"
    dest.with_name("f.bin.part").write_bytes(data)
    fetch(f"{server.url}/f.bin", dest, md5=md5(data), progress=False)  # the server answers 416
    assert dest.read_bytes() == data
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(f"{server.url}/f.bin", tmp_path / "g.bin", md5="0" * 32, progress=False)
    assert not (tmp_path / "g.bin").exists() and not (tmp_path / "g.bin.part").exists()
    with pytest.raises(DataError, match="HTTP 404"):
        fetch(f"{server.url}/nope", tmp_path / "n.bin", progress=False)


def test_archives_extract_atomically_and_the_loaders_read_them(tmp_path):
    rng = np.random.default_rng(1)
    reviews = {"train": imdb_reviews(rng, 3), "test": imdb_reviews(rng, 2)}
    imdb = write_aclimdb_tar(tmp_path / "downloads" / ACLIMDB.filename, reviews)
    cifar = write_cifar_tar(tmp_path / "downloads" / CIFAR10.filename, cifar_batches(rng, 4))
    extract(ACLIMDB, imdb, tmp_path, log=lambda m: None)
    extract(CIFAR10, cifar, tmp_path, log=lambda m: None)
    assert (tmp_path / "downloads" / "aclImdb_v1.tar.gz.extracted").exists()
    assert not list(tmp_path.glob(".extract-*"))
    assert len(tasks.get("text").prepared(tmp_path, "train", {"source": "folder"})) == 6
    assert len(tasks.get("image").prepared(tmp_path, "test", {"source": "pickles"})) == 4


def release_archive(path, nested=True):
    """A tiny lra_release.gz: ListOps and AAN files, nested as some copies are."""
    rows = aan_rows(np.random.default_rng(2), 4)
    members = {}
    for split in ("train", "val", "test"):
        members[f"listops-1000/basic_{split}.tsv"] = b"Source\tTarget\r\n( [MAX 2 ] )\t2\r\n"
        name = {"train": "train", "val": "eval", "test": "test"}[split]
        members[f"tsv_data/new_aan_pairs.{name}.tsv"] = "".join("\t".join(r) + "\n" for r in rows).encode()
    prefix = "lra_release/lra_release/" if nested else "lra_release/"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_lra_data_download_fetches_resumes_extracts_and_checks(tmp_path, server, capsys):
    server.files["lra_release.gz"] = release_archive(tmp_path / "release.gz")
    server.cut["lra_release.gz"] = 300
    argv = ["data", "download", "listops", "--data-dir", str(tmp_path / "data"), "--url", f"{server.url}/lra_release.gz"]
    assert cli.main(argv) == 2  # interrupted: a clear error, the .part kept
    assert "resume" in capsys.readouterr().err
    assert not (tmp_path / "data" / "lra_release").exists()
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "listops: all splits found" in out
    assert (tmp_path / "data/lra_release/listops-1000/basic_val.tsv").exists()  # un-nested into place
    assert len(tasks.get("retrieval").prepared(tmp_path / "data", "val")) == 4
    assert server.requests[-1][1] == "bytes=300-"
    assert cli.main(argv) == 0  # already there: nothing fetched again
    assert "already extracted" in capsys.readouterr().out


def test_existing_folders_are_kept_unless_forced(tmp_path):
    archive = Archive("test", "http://unused", "lra_release.gz", None, ("lra_release",), release=True)
    path = tmp_path / "downloads" / "lra_release.gz"
    path.parent.mkdir()
    release_archive(path, nested=False)
    mine = tmp_path / "lra_release" / "listops-1000"
    mine.mkdir(parents=True)
    (mine / "GENERATED.json").write_text("{}")
    logs = []
    placed = extract(archive, path, tmp_path, log=logs.append)
    assert (mine / "GENERATED.json").exists() and any("kept the existing" in m for m in logs)
    assert tmp_path / "lra_release" / "tsv_data" in placed
    extract(archive, path, tmp_path, force=True, log=logs.append)
    assert not (mine / "GENERATED.json").exists() and (mine / "basic_train.tsv").exists()


def test_corrupt_archive_is_moved_aside(tmp_path):
    path = tmp_path / "downloads" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(DataError, match="cannot be unpacked"):
        extract(CIFAR10, path, tmp_path, log=lambda m: None)
    assert not path.exists() and path.with_name(path.name + ".corrupt").exists()
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_download_rejects_unknown_sources(capsys):
    assert cli.main(["data", "download", "text", "--source", "release"]) == 2
    assert "downloads from archive, hub" in capsys.readouterr().err
