"""Result records: one JSON file per run under <results-dir>/runs/, written atomically.

The keys the contract guarantees (architecture.md):
    run_id, task, attention, attention_options, preset, seed, status, metrics{test_accuracy,
    best_val_accuracy, train_throughput, eval_throughput, peak_memory_mb}, steps, config, env,
    created_at
Accuracy is in percent, throughput in samples/s, memory in MiB. Records carry more (the parameter
count, the training curve, data provenance); readers must ignore keys they do not know.
"""

from __future__ import annotations

import json
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

from lra.atomic import atomic_write_text

STATUSES = ("ok", "oom", "diverged", "failed")
REQUIRED_KEYS = ("run_id", "task", "attention", "attention_options", "preset", "seed", "status", "metrics",
                 "steps", "config", "env", "created_at")
METRIC_KEYS = ("test_accuracy", "best_val_accuracy", "train_throughput", "eval_throughput", "peak_memory_mb")


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
    path = Path(results_dir) / "runs" / f"{record['run_id']}.json"
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False, default=str) + "\n")
    return path


# Option values renamed since records were first written: `impl` took "sdpa" (softmax) and
# "linear" / "quadratic" (the linear forms) before one vocabulary, "fast" / "reference", served all.
LEGACY_IMPL = {"sdpa": "fast", "linear": "fast", "quadratic": "reference"}


def upgrade(record: dict) -> dict:
    """A record as this version of the suite names things (older records used older option values)."""
    for opts in (record.get("attention_options"), (record.get("config") or {}).get("attention_options")):
        if isinstance(opts, dict) and opts.get("impl") in LEGACY_IMPL:
            opts["impl"] = LEGACY_IMPL[opts["impl"]]
    return record


def read_records(results_dir: str | Path) -> list[dict]:
    """Every readable record under <results_dir>/runs/ (unreadable files are skipped with a warning)."""
    out = []
    for path in sorted((Path(results_dir) / "runs").glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            warnings.warn(f"skipping unreadable result record {path}: {exc}")
            continue
        rec["_path"] = str(path)
        out.append(upgrade(rec))
    return out
