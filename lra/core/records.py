"""Result records: one JSON file per run under <results-dir>/runs/, written atomically.

The keys the contract guarantees (docs/architecture.md):
    run_id, task, attention, attention_options, preset, seed, status, metrics{test_accuracy,
    best_val_accuracy, train_throughput, eval_throughput, peak_memory_mb}, steps, config, env,
    created_at
Accuracy is in percent, throughput in samples/s, memory in MiB. Records carry more (the parameter
count, the training curve, data provenance, how the attention ran); readers ignore keys they do
not know.
"""

from __future__ import annotations

import json
import sys
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from tabulate import tabulate

from lra_base.atomic import atomic_write_text

STATUSES = ("ok", "oom", "diverged", "failed")
REQUIRED_KEYS = ("run_id", "task", "attention", "attention_options", "preset", "seed", "status", "metrics",
                 "steps", "config", "env", "created_at")
METRIC_KEYS = ("test_accuracy", "best_val_accuracy", "train_throughput", "eval_throughput", "peak_memory_mb")

# Option values renamed since records were first written: `impl` took "sdpa" (softmax) and
# "linear" / "quadratic" (the linear forms) before one vocabulary, "fast" / "reference", served all.
LEGACY_IMPL = {"sdpa": "fast", "linear": "fast", "quadratic": "reference"}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_run_id(task: str, attention: str, preset: str, seed: int) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{task}-{attention}-{preset}-s{seed}-{stamp}-{uuid.uuid4().hex[:6]}"


def write_record(results_dir: str | Path, record: dict) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"result record lacks {missing}")
    if record["status"] not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, got {record['status']!r}")
    path = record_path(results_dir, record["run_id"])
    text = json.dumps(record, indent=1, sort_keys=False, default=str) + "\n"
    try:
        atomic_write_text(path, text)
        return path
    except OSError as exc:  # the folder turned read-only or full during the run: keep the result anyway
        return _keep_elsewhere(path, text, exc)


def record_path(results_dir: str | Path, run_id: str) -> Path:
    return Path(results_dir) / "runs" / f"{run_id}.json"


def _keep_elsewhere(path: Path, text: str, exc: OSError) -> Path:
    """A finished measurement is never lost: when its record cannot be written where it belongs,
    it goes to the temporary folder (or, failing that, to stderr) with one line saying where."""
    kept = Path(tempfile.gettempdir()) / "lra-unsaved-records" / path.name
    try:
        atomic_write_text(kept, text)
    except OSError:
        print(f"[records] could not write {path} ({exc.strerror or exc}); the record follows:\n{text}", file=sys.stderr)
        return path
    print(f"[records] could not write {path} ({exc.strerror or exc}); the record is kept at {kept}: "
          f"move it into {path.parent}/ once that folder is writable", file=sys.stderr)
    return kept


def saved_in(path: str | Path, results_dir: str | Path) -> bool:
    """Did write_record put the record where it belongs (not in its fallback)?"""
    return Path(path).parent == Path(results_dir) / "runs" and Path(path).exists()


def upgrade(record: dict) -> dict:
    """A record as this version of the suite names things (older records used older option values)."""
    for opts in (record.get("attention_options"), (record.get("config") or {}).get("attention_options")):
        if isinstance(opts, dict) and opts.get("impl") in LEGACY_IMPL:
            opts["impl"] = LEGACY_IMPL[opts["impl"]]
    return record


def read_records(results_dir: str | Path) -> list[dict]:
    """Every record under <results_dir>/runs/, each with its file as `_path`. A file that is not
    readable JSON or not a record is skipped with one line naming it."""
    out = []
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            _skip(path, f"not readable JSON ({exc})")
            continue
        missing = [k for k in REQUIRED_KEYS if k not in rec] if isinstance(rec, dict) else list(REQUIRED_KEYS)
        if missing:
            _skip(path, f"not a result record (lacks {', '.join(missing)})")
            continue
        rec["_path"] = str(path)
        out.append(upgrade(rec))
    return out


def _skip(path: Path, why: str) -> None:
    print(f"[records] skipping {path}: {why}; fix or delete the file", file=sys.stderr)


def _fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def print_summary(records: list[dict]) -> None:
    """One line per training record: the figures a user looks at first, and where the record is."""
    rows = []
    for r in records:
        m = r["metrics"]
        rows.append([r["task"], r["attention"], r["preset"], r["seed"], r["status"], r["steps"],
                     _fmt(m.get("test_accuracy"), ".2f"), _fmt(m.get("best_val_accuracy"), ".2f"),
                     _fmt(m.get("train_throughput"), ".1f"), _fmt(m.get("eval_throughput"), ".1f"),
                     _fmt(m.get("peak_memory_mb"), ".1f"), r.get("num_params", "-")])
    print(tabulate(rows, headers=["task", "attention", "preset", "seed", "status", "steps", "test acc %",
                                  "best dev %", "train samples/s", "eval samples/s", "peak MiB", "params"]))
    for r in records:
        if r.get("path"):
            print(f"record: {r['path']}  ({r['env']['device_name']}, {r['env']['dtype']})")
        if r["metrics"].get("peak_memory_note"):
            print(f"peak memory: {r['metrics']['peak_memory_note']}")
        if r.get("error"):
            print(f"{r['status']}: {r['error'].strip().splitlines()[-1]}")
