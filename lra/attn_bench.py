"""Micro-benchmark of the attention layers alone: forward + backward time and peak memory against N.

    python -m lra.attn_bench                                  # every attention, N = 1024 .. 8192, CPU
    python -m lra.attn_bench --attention pola nystrom softmax --n 2048 8192 --device cuda --json bench.json

One measurement = one attention layer (dim = heads x head_dim, built with max_len = N, options at
their defaults unless given with -o) in training mode on x (B, N, dim) with every token real:
one warm-up step, then timed steps of forward + backward (loss = mean of the squared output)
until at least --min-time seconds and --min-iters steps have run, each step timed with the
device synchronised around it (lra/core/measure.py's `time_steps`, as `lra bench` times). The table shows the median step time
(`--stat min` for the best one, steadier on a shared machine; the rows hold median, min and
mean). Peak memory is lra/core/measure.py's PeakMemory over two more steps: on CUDA the peak of allocated
memory (it includes the layer's parameters and the input, as the PolaFormer paper's Table 6
does), on CPU the peak resident memory the steps added.

Every measurement runs in fresh Python processes, so nothing an earlier measurement allocated
(or left in the allocator) pollutes the next one, and a crash or an out-of-memory kill costs one
cell of the table, not the run. On CPU, time and memory come from two processes: the memory one
runs with glibc's mmap threshold fixed at 1 MiB (MALLOC_MMAP_THRESHOLD_), so every large tensor
goes back to the system when freed and the resident high-water mark sees each step's true peak
(with glibc's default, freed blocks are kept and reused, and the mark misses them), while the
timed one keeps the default allocator, as training has it (the fixed threshold costs page faults
on every step). Workers may grow by at most --memory-limit-gb (lra/core/isolation.py), so running
out of memory is an error they report ("oom") rather than a visit from the kernel's OOM killer. A measurement
that runs past --timeout is recorded as "timeout"; after an oom or a timeout the larger N of the
same attention are skipped.

Presets that only change a constant (pola-a3/a5/a7 vs pola) cost the same and are not repeated
unless named. `bench_rows()` returns the rows for other tools (e.g. `lra bench`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tabulate import tabulate

import attentions
from lra.args import NameList, key_value
from lra.core.env import environment, memory_total_mb
from lra.core.isolation import PACKAGE_ROOT, child_env, is_oom, killed_by_oom_killer, run_captured, set_memory_limit
from lra.core.measure import Timing, time_steps
from lra_base.errors import LRAError

DEFAULT_NS = (1024, 2048, 4096, 8192)
RESULT_TAG = "ATTN_BENCH_RESULT "


# --- one measurement (runs in the worker process) ------------------------------------------------


def measure(spec: dict) -> dict:
    """Time and peak memory of forward + backward for one (attention, N) in this process."""
    device = torch.device(spec["device"])
    if spec.get("threads"):
        torch.set_num_threads(spec["threads"])
    B, N, H, d = spec["batch"], spec["n"], spec["heads"], spec["head_dim"]
    torch.manual_seed(spec.get("seed", 0))
    layer = attentions.build(spec["attention"], dim=H * d, heads=H, max_len=N, **spec.get("options", {}))
    layer = layer.to(device).train()
    x = torch.randn(B, N, H * d, device=device, requires_grad=True)
    mask = torch.ones(B, N, dtype=torch.bool, device=device)
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[spec.get("precision", "fp32")]

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            y = layer(x, mask)
        y.float().square().mean().backward()
        x.grad = None
        layer.zero_grad(set_to_none=True)

    step()  # warm-up: first-call costs (kernels, thread pools) stay out of the figures
    result = {"status": "ok", "params": sum(p.numel() for p in layer.parameters()),
              "threads": torch.get_num_threads(), "attention_info": layer.info() if hasattr(layer, "info") else {}}
    if "time" in spec["phases"]:
        timing = Timing(warmup=0, steps=spec["min_iters"], min_seconds=spec["min_time"], max_steps=spec["max_iters"])
        t = time_steps(step, device, timing, B, per_step=True)
        result.update(ms=1000 * t["median_step_seconds"], ms_min=1000 * t["min_step_seconds"],
                      ms_mean=1000 * t["mean_step_seconds"], iters=t["timed_steps"])
    if "memory" in spec["phases"]:
        t = time_steps(step, device, Timing(warmup=0, steps=2, min_seconds=0.0, max_steps=2), B)
        result.update(peak_mb=t["peak_memory_mb"], memory_method=t["memory_method"])
    return result


def worker(spec: dict) -> int:
    if spec["device"] == "cpu" and spec.get("memory_limit_gb"):
        set_memory_limit(int(spec["memory_limit_gb"] * 1024))
    try:
        result = measure(spec)
    except Exception as exc:  # reported in the row, the table goes on
        result = {"status": "oom" if is_oom(exc) else "failed", "error": f"{type(exc).__name__}: {exc}"[:500]}
    print(RESULT_TAG + json.dumps(result), flush=True)
    return 0


# --- the driver ------------------------------------------------------------------------------------


def default_attentions() -> list[str]:
    """Every registered attention except presets (they share their base's cost)."""
    return [n for n in attentions.available() if not attentions.get(n).is_preset]


def run_worker(spec: dict, timeout: float, env: dict) -> dict:
    """One worker process; its result (status ok / oom / timeout / failed)."""
    if spec.get("threads"):
        env = {**env, "OMP_NUM_THREADS": str(spec["threads"])}
    cmd = [sys.executable, "-m", "lra.attn_bench", "--worker", json.dumps(spec)]
    done = run_captured(cmd, env, timeout, cwd=str(PACKAGE_ROOT))
    if done.timed_out:
        return {"status": "timeout", "error": f"no result within {timeout:g} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    if killed_by_oom_killer(done.returncode):
        return {"status": "oom", "error": "worker killed (signal 9), by the kernel's out-of-memory killer in practice"}
    return {"status": "failed", "error": f"worker exited with {done.returncode}: {done.tail(1)}"[:500]}


def run_one(spec: dict, timeout: float) -> dict:
    """One measurement: on CUDA one worker times and measures; on CPU two workers, because the
    allocator settings that make resident memory honest (every large block mmap-ed, returned on
    free) cost page faults that would distort the time."""
    if not spec["device"].startswith("cpu"):
        return run_worker({**spec, "phases": ["time", "memory"]}, timeout, child_env())
    timed = run_worker({**spec, "phases": ["time"]}, timeout, child_env())
    if timed["status"] != "ok":
        return timed
    env = child_env({"MALLOC_MMAP_THRESHOLD_": str(1 << 20)})  # fixed: no dynamic raise
    mem = run_worker({**spec, "phases": ["memory"]}, timeout, env)
    if mem["status"] != "ok":
        return mem
    return {**timed, **mem, "memory_method": mem["memory_method"] + "+malloc_mmap_threshold_1MiB"}


@dataclass(frozen=True)
class Setting:
    """What every measurement of one table shares (the spec of a row, without its attention and N)."""

    batch: int = 8
    heads: int = 2
    head_dim: int = 32
    device: str = "cpu"
    precision: str = "fp32"
    options: dict = field(default_factory=dict)
    min_time: float = 1.0
    min_iters: int = 2
    max_iters: int = 50
    memory_limit_gb: float | None = None
    threads: int | None = None


def bench_rows(names: Sequence[str] | None = None, ns: Sequence[int] = DEFAULT_NS, *, timeout: float = 600.0,
               progress=None, variants: Sequence[dict] | None = None, rounds: int = 1, **setting) -> list[dict]:
    """One row per (attention, variant, N, round): the spec of the measurement plus its result.
    `setting` takes the fields of Setting (batch=8, heads=2, head_dim=32, device="cpu", ...);
    `variants` are option sets measured for every attention (the layer's own defaults if None).
    The attentions and variants of one N are measured one after the other, and with rounds > 1
    the whole sweep runs again, so a busy machine slows every compared cell alike."""
    s = Setting(**setting)
    names = list(names or default_attentions())
    variants = list(variants or [{}])
    for n in names:
        for v in variants:
            attentions.resolve(n, **{**s.options, **v})  # unknown names / options fail before any work
    if s.memory_limit_gb is None and s.device == "cpu":
        total = memory_total_mb()
        s = dataclasses.replace(s, memory_limit_gb=round(0.8 * total / 1024, 1) if total else None)
    rows, stopped = [], {}
    for round_ in range(rounds):
        for n in sorted(ns):
            for name in names:
                for v in variants:
                    label = name + (f" [{','.join(f'{k}={x}' for k, x in v.items())}]" if v else "")
                    spec = {"attention": name, "n": n, **dataclasses.asdict(s), "options": {**s.options, **v}}
                    if label in stopped:
                        result = {"status": "skipped", "error": stopped[label]}
                    else:
                        result = run_one(spec, timeout)
                        if result["status"] in ("oom", "timeout"):
                            stopped[label] = f"{result['status']} at N={n}"
                    row = {**spec, **result, "label": label, "round": round_}
                    rows.append(row)
                    if progress:
                        progress(row)
    return rows


def combine_rounds(rows: list[dict]) -> list[dict]:
    """One row per (label, N): the median of the rounds' median step times, the best step of all,
    the largest peak; a cell is ok only if every round was."""
    out: dict = {}
    for r in rows:
        out.setdefault((r.get("label", r["attention"]), r["n"]), []).append(r)
    combined = []
    for cell in out.values():
        ok = [r for r in cell if r["status"] == "ok"]
        if len(ok) < len(cell):
            combined.append(next(r for r in cell if r["status"] != "ok"))
            continue
        first = dict(ok[0])
        first.update(ms=statistics.median(r["ms"] for r in ok), ms_min=min(r["ms_min"] for r in ok),
                     peak_mb=max((r["peak_mb"] for r in ok if r.get("peak_mb") is not None), default=None),
                     rounds=len(ok))
        combined.append(first)
    return combined


def ratio_table(rows: list[dict], baseline: str | None, stat: str = "median") -> str:
    """Step time of every measured layer over the baseline's (`--ratio-to`), and of every variant
    over its attention's first variant (e.g. fused / plain), per N."""
    key = "ms_min" if stat == "min" else "ms"
    combined = combine_rounds(rows)
    time = {(r.get("label", r["attention"]), r["n"]): r[key] for r in combined if r["status"] == "ok"}
    labels = list(dict.fromkeys(r.get("label", r["attention"]) for r in rows))
    first_variant = {}
    for r in rows:
        first_variant.setdefault(r["attention"], r.get("label", r["attention"]))
    pairs = [(label, baseline) for label in labels if baseline in labels and label != baseline]
    pairs += [(label, first_variant[r["attention"]]) for label in labels for r in rows
              if r.get("label", r["attention"]) == label and label != first_variant[r["attention"]]]
    ns = sorted({r["n"] for r in rows})
    table = [[f"{a} / {b}"] + [f"{time[(a, n)] / time[(b, n)]:.2f}x" if (a, n) in time and (b, n) in time else "-"
                               for n in ns] for a, b in dict.fromkeys(pairs)]
    return tabulate(table, headers=["time ratio"] + [f"N={n}" for n in ns], disable_numparse=True) if table else ""


def growth(rows: list[dict], key: str, lo: int, hi: int) -> float | None:
    cells = {r["n"]: r.get(key) for r in rows if r["status"] == "ok"}
    a, b = cells.get(lo), cells.get(hi)
    return b / a if a and b else None


def format_table(rows: list[dict], stat: str = "median") -> str:
    """One line per attention (and variant): 'ms / MiB' per N (ms: the median step, or the best
    with stat="min"), and the growth of both over the last 4x of N."""
    rows = combine_rounds(rows)
    ns = sorted({r["n"] for r in rows})
    labels = list(dict.fromkeys(r.get("label", r["attention"]) for r in rows))
    hi = ns[-1]
    lo = hi // 4 if hi // 4 in ns else ns[0]
    headers = ["attention", "complexity"] + [f"N={n}: ms / MiB" for n in ns]
    if lo != hi:
        headers += [f"time x ({lo}->{hi})", f"mem x ({lo}->{hi})"]
    table = []
    for label in labels:
        mine = [r for r in rows if r.get("label", r["attention"]) == label]
        line = [label, attentions.get(mine[0]["attention"]).complexity]
        for n in ns:
            r = next((r for r in mine if r["n"] == n), None)
            if r is None:
                line.append("-")
            elif r["status"] != "ok":
                line.append(r["status"])
            else:
                mb = r["peak_mb"]
                ms = r["ms_min"] if stat == "min" else r["ms"]
                line.append(f"{ms:.1f} / {mb:.0f}" if mb is not None else f"{ms:.1f} / -")
        if lo != hi:
            for key in ("ms_min" if stat == "min" else "ms", "peak_mb"):
                g = growth(mine, key, lo, hi)
                line.append(f"{g:.1f}" if g is not None else "-")
        table.append(line)
    return tabulate(table, headers=headers, disable_numparse=True)


def bench_environment(device: str) -> dict:
    """The machine probe every record uses (lra/core/env.py), with this run's load averages."""
    info = environment(torch.device(device), torch.float32)
    if hasattr(os, "getloadavg"):  # other work on the machine shows in the times
        info["load_average_1_5_15min"] = [round(x, 2) for x in os.getloadavg()]
    info["threads"] = torch.get_num_threads()
    return info


# --- command line ----------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention", nargs="+", action=NameList, default=None, metavar="NAME",
                   help="attentions to measure (default: every registered one except presets)")
    p.add_argument("--n", nargs="+", type=int, default=list(DEFAULT_NS), metavar="N",
                   help=f"sequence lengths (default {' '.join(map(str, DEFAULT_NS))})")
    p.add_argument("--batch", type=int, default=8, help="batch size B (default 8)")
    p.add_argument("--heads", type=int, default=2, help="heads H (default 2)")
    p.add_argument("--head-dim", type=int, default=32, help="head dim d (default 32)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast around the layer (cores run in float32 either way); default fp32")
    p.add_argument("-o", "--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="attention option for every attention measured (repeatable)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads per worker (default: torch's default, all cores). On a machine shared "
                        "with other work, 1 thread avoids the stalls of a multi-threaded step waiting for a "
                        "descheduled thread")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed steps at least (default 1)")
    p.add_argument("--min-iters", type=int, default=2, help="timed steps at least (default 2)")
    p.add_argument("--max-iters", type=int, default=50, help="timed steps at most (default 50)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per measurement (default 600)")
    p.add_argument("--memory-limit-gb", type=float, default=None,
                   help="CPU: memory each worker may add once its libraries are loaded (default 80%% of RAM)")
    p.add_argument("--variants", nargs="+", default=None, metavar="K=V[,K=V]",
                   help="option sets to measure every attention with, e.g. impl=fast impl=fused "
                        "(- for the defaults); the table then shows each variant over the first")
    p.add_argument("--ratio-to", default=None, metavar="NAME",
                   help="print every layer's step time over this one's (e.g. --ratio-to linear)")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure the whole sweep this many times, alternating the layers (default 1)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="step time shown in the table: median (default) or min (steadier on a busy machine)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                   help="also write the rows as JSON to PATH (or stdout with no PATH)")


def parse_variants(texts: Sequence[str] | None) -> list[dict] | None:
    """['impl=fast', 'impl=fused,eps=1e-5', '-'] -> [{'impl': 'fast'}, {...}, {}]."""
    if not texts:
        return None
    return [{} if t in ("-", "default") else dict(key_value(kv) for kv in t.split(",")) for t in texts]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lra.attn_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None

    def progress(row):
        mb = "-" if row.get("peak_mb") is None else f"{row['peak_mb']:.0f}"
        cell = f"{row['ms']:.1f} ms, {mb} MiB" if row["status"] == "ok" else row.get("error", "")
        print(f"  {row['label']:<12} N={row['n']:<6} {row['status']:<8} {cell}", file=sys.stderr, flush=True)

    try:
        rows = bench_rows(args.attention, args.n, batch=args.batch, heads=args.heads, head_dim=args.head_dim,
                          device=args.device, precision=args.precision, options=dict(args.option),
                          min_time=args.min_time, min_iters=args.min_iters, max_iters=args.max_iters,
                          timeout=args.timeout, memory_limit_gb=args.memory_limit_gb, threads=args.threads,
                          progress=progress, variants=parse_variants(args.variants), rounds=args.rounds)
    except LRAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = bench_environment(args.device)
    env["load_average_at_start"] = load_at_start
    if args.threads:
        env["threads"] = args.threads
    head = (f"forward+backward of one attention layer ({args.stat} step time in ms / peak MiB), B={args.batch}, "
            f"H={args.heads}, d={args.head_dim}, {args.precision}, on {env['device_name']}, torch {env['torch']}, "
            f"{env['threads']} threads; load average {env.get('load_average_at_start')} at start, "
            f"{env.get('load_average_1_5_15min')} at end (1/5/15 min)")
    if args.json == "-":
        print(json.dumps({"env": env, "rows": rows}, indent=1))
    else:
        print(head)
        print(format_table(rows, args.stat))
        ratios = ratio_table(rows, args.ratio_to, args.stat)
        if ratios:
            print("\n" + ratios)
        if args.json:
            Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
