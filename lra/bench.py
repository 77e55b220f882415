"""`lra bench`: training and inference throughput and peak memory, measured the same way for every
attention, without training to convergence.

    lra bench --task listops --attention softmax pola-a3                 paper batch and length
    lra bench --task all --attention all --device cpu                     every cell (CPU: batch capped)
    lra bench --task text --attention nystrom --batch-size 8 --seq-len 8192 --set model.dim=128
    lra bench --scaling --attention softmax performer                    time and memory vs length

What one measurement is. The paper model (`lra.config.ModelConfig`, or `--set model.*`) on random
token batches of the task's shape (batch, inputs, length, vocabulary, classes; every position a
real token), with the training recipe's optimiser (AdamW, one-cycle schedule, gradient clipping,
gradient scaler) and precision (bf16 / fp16 autocast on CUDA, fp32 on CPU; attention cores in fp32
whatever the autocast, attentions/base.py):
- train: forward + backward + optimiser step; warm-up steps, then timed steps (at least --steps,
  and more until --min-seconds have passed), the device synchronised at the start and end.
- eval: forward only, model.eval() under no_grad, same batch.
Throughput in samples per second. Peak memory in MiB (lra.measure): on CUDA the peak of allocated
memory (`max_memory_allocated` after a reset); on CPU the peak resident memory the measurement
added, from the kernel's high-water mark reset. The counter starts before the warm-up, since the
first steps allocate what later steps reuse.

Isolation. Every (cell, phase) runs in a fresh Python process: nothing measured earlier (cached
allocator blocks, a larger resident set, autotuning state) can pollute a figure, and an
out-of-memory error or a crash in one measurement never ends the sweep. An out-of-memory result
is a record with status "oom". On CPU each measuring process may add at most
--cpu-memory-limit-mb (default half the machine's memory) to its data segment once its libraries
are loaded, so an oversized cell fails with an allocation error (recorded as "oom") instead of
waking the kernel's OOM killer, which could end this process or a neighbour.

CPU threads. A CPU measurement runs on one thread by default (--threads; 0 = torch's default of
one per core): with several, every parallel operation waits for all its threads, so a step stalls
whenever another process holds a core, and figures swing with whatever else the machine runs
(measured on the 2-core development machine under load: a 256-token training step took 1.1 s
with 2 threads and 0.02 s with 1). The thread count is part of the device name in the record, so
figures taken with different counts never share a table.

CPU batch. A CPU cannot run every task at the paper batch in reasonable time, so without
--batch-size the batch on CPU is the largest that keeps batch x inputs x length within --cpu-tokens
(default 16384 tokens per step), the same for every attention of a task so the figures stay
comparable; the record keeps the paper batch, the batch used and why. CUDA uses the paper batch.

Records. Each cell writes one record under <results-dir>/runs/ with the contract keys
(accuracy None), `kind: "bench"` (or "scaling"), the batch, length and parameter count, and the
per-phase details. `lra report` picks the latest record of each cell.

Scaling (--scaling). For each attention, lengths 256, 512, ... up to --max-length (default 65536)
at a fixed batch (default 1): training step time and peak memory against length, and the slope of
log(time) and log(memory) against log(length) over the longest --fit-points lengths measured
(softmax about 2, linear methods about 1). A sweep stops going longer for an attention once a
point runs out of memory or a training step takes longer than --max-step-seconds, or when the last
two points predict the next step would take more than twice that; the stop and its reason are
recorded in the last point's record.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path

from lra.errors import ConfigError

CPU_TOKENS = 16384
TIMING = {  # warm-up steps, timed steps (at least), seconds (at least), timed steps (at most)
    "cpu": {"warmup": 2, "steps": 5, "min_seconds": 3.0, "max_steps": 200},
    "cuda": {"warmup": 10, "steps": 20, "min_seconds": 2.0, "max_steps": 1000},
}
SCALING_LENGTHS = tuple(2 ** k for k in range(8, 17))  # 256 .. 65536
MAX_STEP_SECONDS = {"cpu": 20.0, "cuda": 10.0}
PHASES = ("train", "eval")


# --- one measurement (runs in its own process) ---------------------------------------------------


def random_batch(task, batch_size: int, seq_len: int, device, seed: int) -> dict:
    """Random ids of the task's shape, every position a real token (the cost of every dense
    implementation is the same whatever the padding), and random labels."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, task.vocab_size, (batch_size, task.num_inputs, seq_len), generator=g)
    labels = torch.randint(0, task.num_classes, (batch_size,), generator=g)
    mask = torch.ones_like(ids, dtype=torch.bool)
    return {"ids": ids.to(device), "mask": mask.to(device), "labels": labels.to(device)}


def set_memory_limit(limit_mb: int | None) -> str | None:
    """Let this process's data segment (heap and private writable mappings) grow by at most
    `limit_mb` from now, so an oversized allocation fails with an error (recorded as "oom")
    instead of the kernel's OOM killer ending this process or a neighbour."""
    if not limit_mb:
        return None
    import resource

    try:
        text = Path("/proc/self/status").read_text()
        current = int(next(l for l in text.splitlines() if l.startswith("VmData:")).split()[1]) * 1024
    except (OSError, StopIteration, ValueError):
        return None
    limit = current + int(limit_mb) * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return f"RLIMIT_DATA: {limit_mb} MiB above the {current // (1024 * 1024)} MiB in use before the model was built"


def make_step(cfg, phase: str, device, precision, total_steps: int):
    """The model, its random batch and one step of `phase`: "train" = forward + backward + the
    training recipe's optimiser step (AdamW, one-cycle schedule, clipping, gradient scaler), as in
    lra/train.py (its own `train_step`); "eval" = forward only, in eval mode under no_grad."""
    import dataclasses

    import torch

    import tasks
    from lra.model import Classifier
    from lra.train import make_scheduler, train_step

    task = tasks.get(cfg.task)
    torch.manual_seed(cfg.seed)
    model = Classifier(cfg.model, attention=cfg.attention, attention_options=cfg.attention_options,
                       vocab_size=task.vocab_size, max_len=cfg.data.seq_len, num_classes=task.num_classes,
                       num_inputs=task.num_inputs, grid=task.grid).to(device)
    run_model = torch.compile(model) if cfg.train.compile else model
    batch = random_batch(task, cfg.train.batch_size, cfg.data.seq_len, device, cfg.seed)
    t = cfg.train
    if phase == "eval":
        model.eval()

        def step():
            with torch.no_grad(), precision.autocast():
                run_model(batch["ids"], batch["mask"])

        return model, batch, step

    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, weight_decay=t.weight_decay)
    scheduler = make_scheduler(optimizer, dataclasses.replace(t, steps=total_steps))

    def step():
        train_step(model, run_model, batch, optimizer, scheduler, precision, params, t)

    return model, batch, step


def measure(spec: dict, limit_memory: bool = False) -> dict:
    """One phase of one cell: spec {config, phase, warmup, steps, min_seconds, max_steps,
    max_step_seconds, memory_limit_mb} -> {status, throughput, step_seconds, peak_memory_mb, ...}.
    With `limit_memory` (the measuring process only) the data segment may grow by at most
    memory_limit_mb from here."""
    import torch

    from lra.config import RunConfig, validate
    from lra.env import environment, pick_device
    from lra.measure import PeakMemory, Stopwatch, synchronize
    from lra.model import count_parameters
    from lra.train import Precision, is_oom

    cfg = RunConfig.from_dict(spec["config"])
    validate(cfg)
    phase = spec["phase"]
    device = pick_device(cfg.device)
    if spec.get("threads") and device.type == "cpu":
        torch.set_num_threads(spec["threads"])
    precision = Precision(cfg.train.precision, device)
    B = cfg.train.batch_size
    out = {"phase": phase, "status": "failed", "env": environment(device, precision.dtype), "num_params": None,
           "throughput": None, "step_seconds": None, "peak_memory_mb": None, "memory_method": None,
           "warmup_steps": 0, "timed_steps": 0, "first_step_seconds": None, "over_budget": False, "error": None,
           "pid": os.getpid()}
    if limit_memory and device.type == "cpu":
        out["memory_limit"] = set_memory_limit(spec.get("memory_limit_mb"))
    model = batch = step = None
    try:
        model, batch, step = make_step(cfg, phase, device, precision, spec["warmup"] + spec["max_steps"] + 1)
        out["num_params"] = count_parameters(model)
        out["attention_info"] = model.attention_info()
        out["load_average"] = _load_average()
        memory = PeakMemory(device)
        memory.start()  # before the warm-up: its first step allocates what the timed steps reuse
        budget = spec.get("max_step_seconds")
        for i in range(spec["warmup"]):
            t0 = time.perf_counter()
            step()
            synchronize(device)
            seconds = time.perf_counter() - t0
            out["warmup_steps"] = i + 1
            if i == 0:
                out["first_step_seconds"] = seconds
            if budget and seconds > budget:  # one timed step is all this point gets
                out["over_budget"] = True
                break
        timer = Stopwatch(device)
        timed_min = 1 if out["over_budget"] else spec["steps"]
        t_start = time.perf_counter()
        timer.start()
        n, per_step = 0, []
        while n < timed_min or (not out["over_budget"] and n < spec["max_steps"]
                                and time.perf_counter() - t_start < spec["min_seconds"]):
            t0 = time.perf_counter()
            step()
            if device.type == "cpu":  # CPU work is synchronous: each step's own time costs nothing to read
                per_step.append(time.perf_counter() - t0)
            timer.count(B)
            n += 1
        timer.stop()
        out.update(status="ok", throughput=timer.rate(), step_seconds=timer.seconds / n, timed_steps=n,
                   peak_memory_mb=memory.peak_mb(), memory_method=memory.method)
        if per_step:  # the spread shows how steady the machine was (a shared CPU is not)
            per_step.sort()
            out["median_step_seconds"] = per_step[len(per_step) // 2]
            out["min_step_seconds"] = per_step[0]
        out["load_average_end"] = _load_average()
    except (torch.OutOfMemoryError, RuntimeError, MemoryError) as exc:
        if isinstance(exc, RuntimeError) and not is_oom(exc):
            out["error"] = traceback.format_exc(limit=-6)
        else:
            out["status"], out["error"] = "oom", (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
    except Exception:
        out["error"] = traceback.format_exc(limit=-6)
    finally:
        del model, batch, step
    return out


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _worker_main(argv: list[str]) -> int:
    """`python -m lra.bench SPEC.json OUT.json`: one measurement in a fresh process."""
    spec = json.loads(Path(argv[0]).read_text())
    result = measure(spec, limit_memory=True)
    Path(argv[1]).write_text(json.dumps(result, default=str))
    return 0


def run_measurement(spec: dict, *, in_process: bool, timeout: float | None) -> dict:
    """Measure in a fresh process (or here, with --in-process); a crash, a kill or a timeout
    becomes a result with its reason, never an exception."""
    if in_process:
        return measure(spec) | {"isolation": "in-process"}
    from lra.grid import child_env

    with tempfile.TemporaryDirectory(prefix="lra-bench-") as d:
        spec_path, out_path = Path(d) / "spec.json", Path(d) / "out.json"
        spec_path.write_text(json.dumps(spec, default=str))
        cmd = [sys.executable, "-m", "lra.bench", str(spec_path), str(out_path)]
        try:
            proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"phase": spec["phase"], "status": "failed", "isolation": "subprocess",
                    "error": f"timed out after {timeout:.0f} s (--timeout)"}
        if out_path.exists():
            return json.loads(out_path.read_text()) | {"isolation": "subprocess"}
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-8:])
        if proc.returncode == -9:  # SIGKILL: on Linux almost always the kernel's out-of-memory killer
            return {"phase": spec["phase"], "status": "oom", "isolation": "subprocess",
                    "error": "the measuring process was killed (SIGKILL), most likely by the kernel's "
                             "out-of-memory killer"}
        return {"phase": spec["phase"], "status": "failed", "isolation": "subprocess",
                "error": f"the measuring process exited with status {proc.returncode}: {tail}"}


# --- planning cells --------------------------------------------------------------------------------


def memory_total_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


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
class Cell:
    task: str
    attention: str
    config: object  # RunConfig
    batch_reason: str
    kind: str = "bench"
    scaling: dict | None = None


def base_config(args, task: str, attention: str):
    import attentions
    from lra.config import set_field
    from lra.presets import make_config

    cfg = make_config(task, "paper", attention=attention, seed=args.seed, device=args.device,
                      results_dir=args.results_dir)
    cfg.preset = "bench"
    cfg.attention_options = dict(args.option)
    if args.precision:
        cfg.train.precision = args.precision
    for key, value in args.set:
        set_field(cfg, key, value)
    attentions.resolve(attention, **cfg.attention_options)  # unknown options fail before any work
    return cfg


def cell_key(record_or_cell: dict) -> str:
    """What makes two bench measurements the same cell (for --skip-existing and the report)."""
    ident = {k: record_or_cell.get(k) for k in ("kind", "task", "attention", "attention_options")}
    cfg = record_or_cell.get("config") or {}
    ident["model"] = cfg.get("model")
    ident["batch"] = (cfg.get("train") or {}).get("batch_size")
    ident["seq_len"] = (cfg.get("data") or {}).get("seq_len")
    ident["precision"] = (cfg.get("train") or {}).get("precision")
    ident["compile"] = (cfg.get("train") or {}).get("compile")
    ident["device"] = (record_or_cell.get("env") or {}).get("device_name")
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def timing_for(args, device_type: str) -> dict:
    t = dict(TIMING["cuda" if device_type == "cuda" else "cpu"])
    for key, flag in (("warmup", "warmup_steps"), ("steps", "steps"), ("min_seconds", "min_seconds")):
        if getattr(args, flag) is not None:
            t[key] = getattr(args, flag)
    t["max_steps"] = max(t["max_steps"], t["steps"])
    return t


# --- records -------------------------------------------------------------------------------------


def build_record(cell: Cell, results: dict[str, dict], *, timing: dict, memory_limit_mb, env_fallback: dict,
                 created_at: str) -> dict:
    import attentions
    import tasks
    from lra.results import new_run_id, now

    cfg = cell.config
    opts = attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options))
    config = cfg.to_dict()
    config["attention_options"] = opts
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
        "task": cell.task, "attention": cell.attention, "attention_options": opts, "preset": "bench",
        "seed": cfg.seed, "status": status,
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
            "phases": {p: {k: r.get(k) for k in ("status", "warmup_steps", "timed_steps", "step_seconds",
                                                  "median_step_seconds", "min_step_seconds", "first_step_seconds",
                                                  "over_budget", "load_average", "load_average_end", "isolation",
                                                  "memory_limit", "pid", "error")}
                       for p, r in results.items()},
        },
    }
    errors = [f"{p}: {r['error']}" for p, r in results.items() if r.get("error")]
    if errors:
        record["error"] = "\n".join(errors)
    if cell.scaling is not None:
        record["scaling"] = dict(cell.scaling)
    record["bench"]["key"] = cell_key(record)
    return record


def fit_slope(lengths, values) -> float | None:
    """Least-squares slope of log(value) against log(length); None with fewer than two points."""
    pts = [(math.log(n), math.log(v)) for n, v in zip(lengths, values) if v and v > 0]
    if len(pts) < 2:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / sxx if sxx else None


def fmt(x, spec: str) -> str:
    return "-" if x is None else format(x, spec)


# --- the command ------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from lra.cli import DEFAULT_RESULTS_DIR, key_value

    p = sub.add_parser("bench", help="throughput and peak memory without training to convergence",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to measure")
    g.add_argument("--task", default="listops", help="task name, a comma list, or all (default listops)")
    g.add_argument("--attention", nargs="+", required=True, metavar="NAME",
                   help="one or more attention names (comma lists too), or all")
    g.add_argument("-o", "--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="attention option for every listed attention (repeatable)")
    g.add_argument("--batch-size", type=int, help="default: the task's paper batch (capped on CPU, see --cpu-tokens)")
    g.add_argument("--seq-len", type=int, help="default: the task's paper length")
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="default auto: as in training")
    g.add_argument("--set", action="append", type=key_value, default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set model.dim=128 --set model.grad_checkpoint=true")
    g.add_argument("--phases", default="train,eval", help="train, eval or both (default train,eval)")
    g.add_argument("--seed", type=int, default=0, help="seed of the weights and the random batch")
    r = p.add_argument_group("where and how")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    r.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"default {DEFAULT_RESULTS_DIR}")
    r.add_argument("--warmup-steps", type=int, help="untimed steps first (default: 2 on CPU, 10 on CUDA)")
    r.add_argument("--steps", type=int, help="timed steps, at least (default: 5 on CPU, 20 on CUDA)")
    r.add_argument("--min-seconds", type=float, help="keep timing until this many seconds (default 3 CPU, 2 CUDA)")
    r.add_argument("--threads", type=int, default=1,
                   help="CPU threads of each measuring process (default 1; 0 = torch's default, one per core): "
                        "several threads stall on each other whenever another process holds a core")
    r.add_argument("--cpu-tokens", type=int, default=CPU_TOKENS,
                   help=f"CPU batch cap: batch x inputs x length per step (default {CPU_TOKENS})")
    r.add_argument("--cpu-memory-limit-mb", type=int, default=None,
                   help="memory each CPU measuring process may add (default half the machine's; 0 = no limit)")
    r.add_argument("--timeout", type=float, default=3600.0, help="seconds per measuring process (default 3600)")
    r.add_argument("--skip-existing", action="store_true",
                   help="skip cells that already have an ok record of the same configuration on this machine")
    r.add_argument("--in-process", action="store_true",
                   help="measure in this process (debugging: CPU memory figures may then be polluted)")
    s = p.add_argument_group("scaling sweep (--scaling)")
    s.add_argument("--scaling", action="store_true", help="time and memory against sequence length")
    s.add_argument("--lengths", default=None, help="comma list (default 256,512,...,65536)")
    s.add_argument("--max-length", type=int, default=None, help="longest length of the default list (65536)")
    s.add_argument("--max-step-seconds", type=float, default=None,
                   help="stop an attention's sweep after a training step this long (default 20 CPU, 10 CUDA)")
    s.add_argument("--fit-points", type=int, default=4, help="longest lengths the slope is fitted on (default 4)")
    p.set_defaults(func=cmd_bench)


def _checked_phases(args) -> list[str]:
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


def _cells(args, task_names, attention_names, device_type: str) -> list[Cell]:
    """Every (task, attention) with its configuration and the batch it will run (and why)."""
    import tasks

    cells = []
    for task_name in task_names:
        for attention in attention_names:
            cfg = base_config(args, task_name, attention)
            if args.seq_len is not None:
                cfg.data.seq_len = args.seq_len
            cfg.train.batch_size, reason = choose_batch(tasks.get(task_name), cfg.data.seq_len, args.batch_size,
                                                        device_type, args.cpu_tokens)
            cells.append(Cell(task_name, attention, cfg, reason))
    return cells


def _recorded_cells(results_dir) -> dict:
    """Cell key -> the successful bench record already under results_dir (for --skip-existing)."""
    from lra.results import read_records

    return {r["bench"]["key"]: r for r in read_records(results_dir)
            if r.get("kind") == "bench" and r.get("status") == "ok" and r.get("bench", {}).get("key")}


def cmd_bench(args) -> int:
    import torch

    import attentions
    from lra.env import environment, pick_device
    from lra.grid import expand_attentions, expand_tasks
    from lra.results import now, write_record

    device = pick_device(args.device)
    phases = _checked_phases(args)
    task_names = expand_tasks(args.task)
    attention_names = expand_attentions(args.attention)
    timing = timing_for(args, device.type)
    limit = None
    if device.type == "cpu":
        limit = args.cpu_memory_limit_mb if args.cpu_memory_limit_mb is not None else (memory_total_mb() or 0) // 2
        limit = limit or None
    if args.threads and device.type == "cpu":
        torch.set_num_threads(args.threads)  # here too, so this process names the device as the measurements do
    env_here = environment(device, torch.float32)
    os.environ.setdefault("LRA_GIT_SHA", env_here["git_sha"])  # every measuring process reports this checkout

    if args.scaling:
        return _scaling(args, device, task_names, attention_names, phases, timing, limit, env_here)

    cells = _cells(args, task_names, attention_names, device.type)
    existing = _recorded_cells(args.results_dir) if args.skip_existing else {}

    rows, failures = [], 0
    print(f"[bench] {len(cells)} cells on {env_here['device_name']}; phases {', '.join(phases)}; "
          f"warm-up {timing['warmup']} steps, then >= {timing['steps']} timed steps and >= {timing['min_seconds']} s",
          flush=True)
    for cell in cells:
        cfg = cell.config
        opts = attentions.options_dict(attentions.resolve(cfg.attention, **cfg.attention_options))
        probe = {"kind": "bench", "task": cell.task, "attention": cell.attention, "attention_options": opts,
                 "config": cfg.to_dict() | {"attention_options": opts}, "env": {"device_name": env_here["device_name"]}}
        if cell_key(probe) in existing:
            rec = existing[cell_key(probe)]
            print(f"[bench] {cell.task} / {cell.attention}: recorded already ({Path(rec['_path']).name}); skipped")
            rows.append(_row(rec, "skipped"))
            continue
        print(f"[bench] {cell.task} / {cell.attention}: batch {cfg.train.batch_size} x length {cfg.data.seq_len}"
              f" ({cell.batch_reason})", flush=True)
        created = now()
        results = {}
        for phase in phases:
            spec = {"config": cfg.to_dict(), "phase": phase, **timing, "max_step_seconds": None,
                    "memory_limit_mb": limit, "threads": args.threads}
            results[phase] = run_measurement(spec, in_process=args.in_process, timeout=args.timeout)
        record = build_record(cell, results, timing=timing, memory_limit_mb=limit, env_fallback=env_here,
                              created_at=created)
        path = write_record(args.results_dir, record)
        record["_path"] = str(path)
        failures += record["status"] != "ok"
        rows.append(_row(record, record["status"]))
        m = record["metrics"]
        print(f"[bench]   {record['status']}: train {fmt(m['train_throughput'], '.1f')} samples/s, "
              f"{fmt(m['peak_memory_mb'], '.0f')} MiB; eval {fmt(m['eval_throughput'], '.1f')} samples/s, "
              f"{fmt(m['eval_peak_memory_mb'], '.0f')} MiB -> {path}", flush=True)
        if record.get("error"):
            print(f"[bench]   {record['error'].strip().splitlines()[-1][:300]}", flush=True)
    _print_table(rows)
    return 1 if failures else 0


def _row(r: dict, outcome: str) -> list:
    m, b = r["metrics"], r.get("bench", {})
    return [r["task"], r["attention"], b.get("batch_size"), b.get("seq_len"), outcome,
            fmt(m.get("train_throughput"), ".1f"), fmt(m.get("eval_throughput"), ".1f"),
            fmt(m.get("peak_memory_mb"), ".0f"), fmt(m.get("eval_peak_memory_mb"), ".0f"), r.get("num_params", "-")]


def _print_table(rows: list) -> None:
    from tabulate import tabulate

    print()
    print(tabulate(rows, headers=["task", "attention", "batch", "length", "status", "train samples/s",
                                  "eval samples/s", "train MiB", "eval MiB", "params"]))


def scaling_lengths(args) -> list[int]:
    if args.lengths:
        try:
            lengths = sorted({int(x) for x in args.lengths.split(",") if x.strip()})
        except ValueError:
            raise ConfigError(f"--lengths takes a comma list of integers, got {args.lengths!r}") from None
        if not lengths or lengths[0] < 1:
            raise ConfigError(f"--lengths must be positive, got {args.lengths!r}")
        return lengths
    top = args.max_length or SCALING_LENGTHS[-1]
    return [n for n in SCALING_LENGTHS if n <= top] or [SCALING_LENGTHS[0]]


def _scaling(args, device, task_names, attention_names, phases, timing, limit, env_here) -> int:
    from tabulate import tabulate

    from lra.results import now, write_record

    lengths = scaling_lengths(args)
    batch = args.batch_size or 1
    budget = args.max_step_seconds or MAX_STEP_SECONDS["cuda" if device.type == "cuda" else "cpu"]
    sweep_id = uuid.uuid4().hex[:10]
    print(f"[scaling] sweep {sweep_id}: lengths {lengths[0]}..{lengths[-1]}, batch {batch}, on "
          f"{env_here['device_name']}; stop after a training step over {budget:g} s or an out-of-memory", flush=True)
    summary = []
    for task_name in task_names:
        for attention in attention_names:
            points = []  # (length, step seconds, peak MiB)
            stop = None
            for i, n in enumerate(lengths):
                cfg = base_config(args, task_name, attention)
                cfg.data.seq_len, cfg.train.batch_size = n, batch
                info = {"sweep_id": sweep_id, "lengths": lengths, "batch_size": batch, "max_step_seconds": budget,
                        "fit_points": args.fit_points, "stop_reason": None, "skipped_lengths": []}
                cell = Cell(task_name, attention, cfg, f"scaling sweep at batch {batch}", kind="scaling", scaling=info)
                created = now()
                results = {p: run_measurement({"config": cfg.to_dict(), "phase": p, **timing,
                                               "max_step_seconds": budget, "memory_limit_mb": limit,
                                               "threads": args.threads},
                                              in_process=args.in_process, timeout=args.timeout)
                           for p in phases}
                first = results[phases[0]]
                ok = first["status"] == "ok"
                if ok:
                    points.append((n, first["step_seconds"], first.get("peak_memory_mb")))
                # Decide now whether the sweep goes on, so the reason lands in this point's record.
                if not ok:
                    stop = f"{first['status']} at length {n}"
                elif first.get("over_budget") or first["step_seconds"] > budget:
                    stop = f"a training step took {first['first_step_seconds'] or first['step_seconds']:.1f} s at " \
                           f"length {n} (budget {budget:g} s, --max-step-seconds)"
                elif i + 1 < len(lengths) and len(points) >= 2:
                    (n0, t0, _), (n1, t1, _) = points[-2], points[-1]
                    slope = max(1.0, math.log(t1 / t0) / math.log(n1 / n0)) if t0 > 0 and t1 > 0 else 1.0
                    predicted = t1 * (lengths[i + 1] / n1) ** slope
                    if predicted > 2 * budget:
                        stop = (f"predicted {predicted:.0f} s per training step at length {lengths[i + 1]} from the "
                                f"last two points (over 2 x {budget:g} s budget)")
                if stop and i + 1 < len(lengths):
                    info["stop_reason"], info["skipped_lengths"] = stop, lengths[i + 1:]
                elif stop:
                    info["stop_reason"] = stop
                record = build_record(cell, results, timing=timing, memory_limit_mb=limit, env_fallback=env_here,
                                      created_at=created)
                path = write_record(args.results_dir, record)
                m = record["metrics"]
                print(f"[scaling] {task_name} / {attention} length {n}: {record['status']}, "
                      f"{fmt((m['train_step_seconds'] or 0) * 1000 if m['train_step_seconds'] else None, '.1f')} ms/step,"
                      f" {fmt(m['peak_memory_mb'], '.0f')} MiB -> {path.name}", flush=True)
                if stop:
                    if info["skipped_lengths"]:
                        print(f"[scaling]   stop: {stop}; not measured: {info['skipped_lengths']}", flush=True)
                    break
            fit = points[-args.fit_points:]
            t_slope = fit_slope([p[0] for p in fit], [p[1] for p in fit])
            m_slope = fit_slope([p[0] for p in fit], [p[2] for p in fit])
            summary.append([task_name, attention, len(points), points[-1][0] if points else "-",
                            fmt(t_slope, ".2f"), fmt(m_slope, ".2f"), stop or "-"])
    print()
    print(tabulate(summary, headers=["task", "attention", "points", "longest", "time slope", "memory slope",
                                     "stopped"]))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
