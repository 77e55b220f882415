"""Bench measurements: one phase of one cell, measured in a fresh process, and its record.

`lra bench` (lra/bench.py) and its scaling sweep (lra/scaling.py) plan cells and hand each to
`measure_cell`: every phase (train, eval) runs as `python -m lra.measurements SPEC.json OUT.json`
in a fresh interpreter (lra/core/isolation.py), which builds the paper model, times the training
loop's own step with lra/core/measure.py's `time_steps`, and reports throughput, time per step
and peak memory. What a measurement is, and why each runs alone, is told in lra/bench.py.
"""


from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch

import tasks
from lra.core.config import RunConfig, set_field, validate
from lra.core.env import environment, load_average, memory_total_mb, pick_device
from lra.core.identity import config_dict, measurement_key
from lra.core.isolation import child_env, is_oom, killed_by_oom_killer, run_captured, set_memory_limit
from lra.core.measure import Timing, time_steps
from lra.core.model import count_parameters
from lra.core.presets import make_config
from lra.core.records import new_run_id, now, write_record
from lra.core.step import Precision, benchmark_step
from lra_base.errors import ConfigError

CPU_TOKENS = 16384
TIMING = {  # warm-up steps, timed steps (at least), seconds (at least), timed steps (at most)
    "cpu": {"warmup": 2, "steps": 5, "min_seconds": 3.0, "max_steps": 200},
    "cuda": {"warmup": 10, "steps": 20, "min_seconds": 2.0, "max_steps": 1000},
}
PHASES = ("train", "eval")


# --- one measurement (runs in its own process) ---------------------------------------------------


def measure(spec: dict, limit_memory: bool = False) -> dict:
    """One phase of one cell: spec {config, phase, warmup, steps, min_seconds, max_steps,
    max_step_seconds, memory_limit_mb, threads} -> {status, throughput, step_seconds,
    peak_memory_mb, ...}. With `limit_memory` (the measuring process only) the data segment may
    grow by at most memory_limit_mb from here."""
    cfg = RunConfig.from_dict(spec["config"])
    validate(cfg)
    device = pick_device(cfg.device)
    if spec.get("threads") and device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    precision = Precision(cfg.train.precision, device)
    timing = Timing(spec["warmup"], spec["steps"], spec["min_seconds"], spec["max_steps"], spec.get("max_step_seconds"))
    out = {"phase": spec["phase"], "status": "failed", "env": environment(device, precision.dtype), "num_params": None,
           "throughput": None, "step_seconds": None, "peak_memory_mb": None, "memory_method": None,
           "warmup_steps": 0, "timed_steps": 0, "first_step_seconds": None, "over_budget": False, "error": None,
           "pid": os.getpid()}
    if limit_memory and device.type == "cpu":
        out["memory_limit"] = set_memory_limit(spec.get("memory_limit_mb"))
    try:
        model, _, step = benchmark_step(cfg, spec["phase"], device, precision, timing.warmup + timing.max_steps + 1)
        out.update(num_params=count_parameters(model), attention_info=model.attention_info(),
                   load_average=load_average())
        del model  # the step holds what it needs
        out.update(time_steps(step, device, timing, cfg.train.batch_size), status="ok",
                   load_average_end=load_average())
    except Exception as exc:
        if is_oom(exc):
            out["status"], out["error"] = "oom", (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
        else:
            out["error"] = traceback.format_exc(limit=-6)
    return out


def _worker_main(argv: list[str]) -> int:
    """`python -m lra.measurements SPEC.json OUT.json`: one measurement in a fresh process."""
    spec = json.loads(Path(argv[0]).read_text())
    result = measure(spec, limit_memory=True)
    Path(argv[1]).write_text(json.dumps(result, default=str))
    return 0


def run_measurement(spec: dict, *, in_process: bool, timeout: float | None) -> dict:
    """Measure in a fresh process (or here, with --in-process); a crash, a kill or a timeout
    becomes a result with its reason, never an exception."""
    if in_process:
        return measure(spec) | {"isolation": "in-process"}
    with tempfile.TemporaryDirectory(prefix="lra-bench-") as d:
        spec_path, out_path = Path(d) / "spec.json", Path(d) / "out.json"
        spec_path.write_text(json.dumps(spec, default=str))
        done = run_captured([sys.executable, "-m", "lra.measurements", str(spec_path), str(out_path)], child_env(), timeout)
        failed = {"phase": spec["phase"], "status": "failed", "isolation": "subprocess"}
        if done.timed_out:
            return failed | {"error": f"timed out after {timeout:.0f} s (--timeout)"}
        if out_path.exists():
            return json.loads(out_path.read_text()) | {"isolation": "subprocess"}
        if killed_by_oom_killer(done.returncode):
            return failed | {"status": "oom", "error": "the measuring process was killed (SIGKILL), most likely by "
                                                       "the kernel's out-of-memory killer"}
        return failed | {"error": f"the measuring process exited with status {done.returncode}: {done.tail()}"}


# --- planning cells --------------------------------------------------------------------------------


def choose_batch(task, seq_len: int, given: int | None, device_type: str, cpu_tokens: int) -> tuple[int, str]:
    """The batch to measure and why."""
    paper = task.recipe.batch_size
    if given is not None:
        return given, f"--batch-size {given}"
    if device_type != "cpu":
        return paper, "paper batch"
    per_sample = task.num_inputs * seq_len
    if paper * per_sample <= cpu_tokens:
        return paper, "paper batch"
    batch = max(1, cpu_tokens // per_sample)
    return batch, (f"CPU: the paper batch {paper} x {per_sample} tokens exceeds the CPU budget of {cpu_tokens} "
                   f"tokens per step (--cpu-tokens); batch {batch} for every attention of this task")


@dataclass
class BenchCell:
    """One (task, attention) measurement: its configuration and why it runs at its batch."""

    task: str
    attention: str
    config: RunConfig
    batch_reason: str
    kind: str = "bench"
    scaling: dict | None = None


def base_config(args, task: str, attention: str) -> RunConfig:
    cfg = make_config(task, "paper", attention=attention, seed=args.seed, device=args.device,
                      results_dir=args.results_dir)
    cfg.preset = "bench"
    cfg.attention_options = dict(args.option)
    if args.precision:
        cfg.train.precision = args.precision
    for key, value in args.set:
        set_field(cfg, key, value)
    config_dict(cfg)  # unknown options fail before any work
    return cfg


def timing_for(args, device_type: str) -> dict:
    t = dict(TIMING["cuda" if device_type == "cuda" else "cpu"])
    for key, flag in (("warmup", "warmup_steps"), ("steps", "steps"), ("min_seconds", "min_seconds")):
        if getattr(args, flag) is not None:
            t[key] = getattr(args, flag)
    t["max_steps"] = max(t["max_steps"], t["steps"])
    return t


# --- records -------------------------------------------------------------------------------------

PHASE_KEYS = ("status", "warmup_steps", "timed_steps", "step_seconds", "median_step_seconds", "min_step_seconds",
              "first_step_seconds", "over_budget", "load_average", "load_average_end", "isolation", "memory_limit",
              "allocated_before_mb", "pid", "error")


def build_record(cell: BenchCell, results: dict[str, dict], *, timing: dict, memory_limit_mb, env_fallback: dict,
                 created_at: str) -> dict:
    cfg = cell.config
    config = config_dict(cfg)
    train, ev = results.get("train"), results.get("eval")
    statuses = [r["status"] for r in results.values()]
    status = "ok" if all(s == "ok" for s in statuses) else ("oom" if "oom" in statuses else "failed")
    env = next((r["env"] for r in results.values() if r.get("env")), env_fallback)

    def get(r, key):
        return r.get(key) if r else None

    task = tasks.get(cell.task)
    label = "bench" if cell.kind == "bench" else f"n{cfg.data.seq_len}"
    record = {
        "run_id": new_run_id(cell.task, cell.attention, label, cfg.seed),
        "task": cell.task, "attention": cell.attention, "attention_options": config["attention_options"],
        "preset": "bench", "seed": cfg.seed, "status": status,
        "metrics": {
            "test_accuracy": None, "best_val_accuracy": None,
            "train_throughput": get(train, "throughput"), "eval_throughput": get(ev, "throughput"),
            "peak_memory_mb": get(train, "peak_memory_mb"), "eval_peak_memory_mb": get(ev, "peak_memory_mb"),
            "train_step_seconds": get(train, "step_seconds"), "eval_step_seconds": get(ev, "step_seconds"),
            "peak_memory_method": get(train or ev, "memory_method"),
        },
        "steps": get(train, "timed_steps") or 0,
        "num_params": next((r["num_params"] for r in results.values() if r.get("num_params")), None),
        "attention_info": next((r["attention_info"] for r in results.values() if "attention_info" in r), {}),
        "config": config, "env": env, "created_at": created_at, "finished_at": now(), "kind": cell.kind,
        "bench": {
            "batch_size": cfg.train.batch_size, "paper_batch_size": task.recipe.batch_size,
            "batch_reason": cell.batch_reason, "seq_len": cfg.data.seq_len, "paper_seq_len": task.recipe.seq_len,
            "num_inputs": task.num_inputs, "inputs": "random tokens, every position real",
            "timing": timing, "cpu_memory_limit_mb": memory_limit_mb,
            "phases": {p: {k: r.get(k) for k in PHASE_KEYS} for p, r in results.items()},
        },
    }
    errors = [f"{p}: {r['error']}" for p, r in results.items() if r.get("error")]
    if errors:
        record["error"] = "\n".join(errors)
    if cell.scaling is not None:
        record["scaling"] = dict(cell.scaling)
    record["bench"]["key"] = measurement_key(record)
    return record


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


# --- a command's measurements ------------------------------------------------------------------


def checked_phases(args) -> list[str]:
    """The phases to measure, after checking every numeric flag (ConfigError naming the flag)."""
    phases = [p for p in (x.strip() for x in args.phases.split(",")) if p]
    if args.scaling and args.phases == "train,eval":
        phases = ["train"]
    bad = [p for p in phases if p not in PHASES]
    if bad or not phases:
        raise ConfigError(f"--phases takes train, eval or both (comma list), got {args.phases!r}")
    for flag in ("batch_size", "seq_len", "warmup_steps", "cpu_tokens", "threads"):
        v, low = getattr(args, flag), 0 if flag in ("warmup_steps", "threads") else 1
        if v is not None and v < low:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= {low}, got {v}")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    return phases


@dataclass
class Plan:
    """What every measurement of one `lra bench` command shares."""

    device: torch.device
    phases: list[str]
    timing: dict
    memory_limit_mb: int | None
    env: dict  # this process's probe, standing in for a measurement that never reported one


def make_plan(args) -> Plan:
    device = pick_device(args.device)
    phases = checked_phases(args)
    limit = None
    if device.type == "cpu":
        limit = args.cpu_memory_limit_mb if args.cpu_memory_limit_mb is not None else (memory_total_mb() or 0) // 2
        limit = limit or None
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)  # here too, so this process names the device as the measurements do
    env = environment(device, torch.float32)
    os.environ.setdefault("LRA_GIT_SHA", env["git_sha"])  # every measuring process reports this checkout
    return Plan(device, phases, timing_for(args, device.type), limit, env)


def measure_cell(args, plan: Plan, cell: BenchCell, max_step_seconds: float | None = None, decide=None) -> dict:
    """Every phase of one cell, each in a fresh process; its record, written. `decide(first)` is
    called with the first phase's result before the record is built (a sweep notes there why it
    stops, so the reason lands in this record)."""
    created = now()
    results = {}
    for phase in plan.phases:
        spec = {"config": cell.config.to_dict(), "phase": phase, **plan.timing, "max_step_seconds": max_step_seconds,
                "memory_limit_mb": plan.memory_limit_mb, "threads": args.threads}
        results[phase] = run_measurement(spec, in_process=args.in_process, timeout=args.timeout)
    if decide is not None:
        decide(results[plan.phases[0]])
    record = build_record(cell, results, timing=plan.timing, memory_limit_mb=plan.memory_limit_mb,
                          env_fallback=plan.env, created_at=created)
    record["_path"] = str(write_record(args.results_dir, record))
    return record

if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
