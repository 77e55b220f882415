"""`lra bench`: training and inference throughput and peak memory, measured the same way for every
attention, without training to convergence.

    lra bench --task listops --attention softmax pola-a3                 paper batch and length
    lra bench --task all --attention all --device cpu                     every cell (CPU: batch capped)
    lra bench --task text --attention nystrom --batch-size 8 --seq-len 8192 --set model.dim=128
    lra bench --scaling --attention softmax performer                    time and memory vs length

What one measurement is. The paper model (`lra.core.config.ModelConfig`, or `--set model.*`) on random
token batches of the task's shape (batch, inputs, length, vocabulary, classes; every position a
real token), with the training recipe's optimiser (AdamW, one-cycle schedule, gradient clipping,
gradient scaler) and precision (bf16 / fp16 autocast on CUDA, fp32 on CPU; attention cores in fp32
whatever the autocast, attentions/base.py):
- train: forward + backward + optimiser step, the training loop's own TrainStep
  (lra/core/step.py); warm-up steps, then timed steps (at least --steps, and more until
  --min-seconds have passed), the device synchronised at the start and end.
- eval: forward only, model.eval() under no_grad, same batch.
Throughput in samples per second. Peak memory in MiB (lra/core/measure.py): on CUDA the peak of allocated
memory (`max_memory_allocated` after a reset); on CPU the peak resident memory the measurement
added, from the kernel's high-water mark reset. The counter starts before the warm-up, since the
first steps allocate what later steps reuse.

Isolation (--isolation). On CPU every (cell, phase) runs in a fresh Python process: nothing
measured earlier (cached allocator blocks, a larger resident set) can pollute a figure, and an
out-of-memory error or a crash in one measurement never ends the sweep. On CUDA the peak comes
from the allocator's counters, reset per measurement, so one fresh process per task measures
all of its cells (lra/bench_task.py; a crash costs that process, and a fresh one takes the
cells left). An out-of-memory result is a record with status "oom". On CPU each measuring process may add at most
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

Scaling (--scaling, lra/scaling.py). For each attention, lengths 256, 512, ... up to --max-length (default 65536)
at a fixed batch (default 1): training step time and peak memory against length, and the slope of
log(time) and log(memory) against log(length) over the longest --fit-points lengths measured
(softmax about 2, linear methods about 1). A sweep stops going longer for an attention once a
point runs out of memory or a training step takes longer than --max-step-seconds, or when the last
two points predict the next step would take more than twice that; the stop and its reason are
recorded in the last point's record.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from tabulate import tabulate

import tasks
from lra import scaling
from lra.args import NameList, key_value
from lra.bench_task import measure_task
from lra.core.config import DEFAULT_RESULTS_DIR
from lra.core.identity import config_dict, measurement_key
from lra.core.env import load_average
from lra.core.names import expand_attentions, expand_tasks
from lra.core.records import read_records, saved_in
from lra.measurements import CPU_TOKENS, BenchCell, base_config, choose_batch, fmt, make_plan, measure_cell
from lra_base.atomic import check_writable


# --- the command ------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="throughput and peak memory without training to convergence",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("what to measure")
    g.add_argument("--task", nargs="+", action=NameList, default=["listops"], metavar="NAME",
                   help="task names (comma lists too), or all (default listops)")
    g.add_argument("--attention", nargs="+", action=NameList, required=True, metavar="NAME",
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
    r.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR,
                   help=f"where records go (default {DEFAULT_RESULTS_DIR}, env LRA_RESULTS_DIR)")
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
    r.add_argument("--ratio-to", default=None, metavar="NAME",
                   help="after the table, every attention's training throughput and memory over this one's, "
                        "per task (e.g. --ratio-to softmax)")
    r.add_argument("--skip-existing", action="store_true",
                   help="skip cells that already have an ok record of the same configuration on this machine")
    r.add_argument("--isolation", choices=["auto", "cell", "task"], default="auto",
                   help="a fresh process per measurement (cell) or per task (task); auto: task on CUDA, "
                        "cell on CPU, where resident memory needs a process per measurement")
    r.add_argument("--in-process", action="store_true",
                   help="measure in this process (debugging: CPU memory figures may then be polluted)")
    scaling.add_arguments(p)
    p.set_defaults(func=cmd_bench)


def plan_cells(args, task_names, attention_names, device_type: str) -> list[BenchCell]:
    """Every (task, attention) with its configuration and the batch it will run (and why)."""
    cells = []
    for task_name in task_names:
        for attention in attention_names:
            cfg = base_config(args, task_name, attention)
            if args.seq_len is not None:
                cfg.data.seq_len = args.seq_len
            cfg.train.batch_size, reason = choose_batch(tasks.get(task_name), cfg.data.seq_len, args.batch_size,
                                                        device_type, args.cpu_tokens)
            cells.append(BenchCell(task_name, attention, cfg, reason))
    return cells


def recorded_cells(results_dir) -> dict:
    """Measurement key -> the ok bench record already under results_dir (for --skip-existing)."""
    return {measurement_key(r): r for r in read_records(results_dir) if r.get("kind") == "bench" and r.get("status") == "ok"}


def cmd_bench(args) -> int:
    plan = make_plan(args)
    task_names, attention_names = expand_tasks(args.task), expand_attentions(args.attention)
    check_writable(Path(args.results_dir) / "runs", "the measurements' records",
                   "pass --results-dir DIR, a folder you can write (or set LRA_RESULTS_DIR)")
    if args.scaling:
        return scaling.run(args, plan, task_names, attention_names)
    cells = plan_cells(args, task_names, attention_names, plan.device.type)
    existing = recorded_cells(args.results_dir) if args.skip_existing else {}
    rows, todo = [], []
    print(f"[bench] {len(cells)} cells on {plan.env['device_name']}; phases {', '.join(plan.phases)}; "
          f"warm-up {plan.timing['warmup']} steps, then >= {plan.timing['steps']} timed steps and >= "
          f"{plan.timing['min_seconds']} s", flush=True)
    for cell in cells:
        rec = existing.get(cell_key(cell, plan))
        if rec is not None:
            print(f"[bench] {cell.task} / {cell.attention}: recorded already ({Path(rec['_path']).name}); skipped")
            rows.append(table_row(rec, "skipped"))
        else:
            todo.append(cell)
    records = measure_cells(args, plan, todo, isolation(args, plan.device.type))
    rows += [table_row(r, r["status"]) for r in records]
    print_table(rows)
    if args.ratio_to:
        print_ratios(rows, args.ratio_to)
    print(f"[bench] load average {load_average()} at the end (the measurements record theirs)")
    # a record that could not be written where asked was kept elsewhere (and said): still a failure
    return 1 if any(r["status"] != "ok" or not saved_in(r["_path"], args.results_dir) for r in records) else 0


def cell_key(cell: BenchCell, plan) -> str:
    """The measurement key a record of `cell` on this machine will have (for --skip-existing)."""
    return measurement_key({"kind": "bench", "config": config_dict(cell.config),
                            "env": {"device_name": plan.env["device_name"]}})


def isolation(args, device_type: str) -> str:
    if args.in_process:
        return "cell"
    return args.isolation if args.isolation != "auto" else ("task" if device_type == "cuda" else "cell")


def measure_cells(args, plan, cells: list[BenchCell], how: str, deadline: float | None = None) -> list[dict]:
    """Measure `cells` (a fresh process per measurement, or per task), printing each record as it
    is written; cells left when `deadline` (time.monotonic()) passes are not measured."""
    records: list[dict] = []
    if how == "cell":
        for cell in cells:
            if deadline is not None and time.monotonic() >= deadline:
                break
            cfg = cell.config
            print(f"[bench] {cell.task} / {cell.attention}: batch {cfg.train.batch_size} x length {cfg.data.seq_len}"
                  f" ({cell.batch_reason})", flush=True)
            records.append(announce(measure_cell(args, plan, cell, getattr(args, "max_step_seconds", None))))
        return records
    for task in dict.fromkeys(c.task for c in cells):
        group = [c for c in cells if c.task == task]
        cfg = group[0].config
        print(f"[bench] {task}: {len(group)} cells in one fresh process; batch {cfg.train.batch_size} x length "
              f"{cfg.data.seq_len} ({group[0].batch_reason})", flush=True)
        records += measure_task(args, plan, group, deadline, on_record=announce)
    return records


def announce(record: dict) -> dict:
    m = record["metrics"]
    print(f"[bench]   {record['task']} / {record['attention']}: {record['status']}: train "
          f"{fmt(m['train_throughput'], '.1f')} samples/s, {fmt(m['peak_memory_mb'], '.0f')} MiB; eval "
          f"{fmt(m['eval_throughput'], '.1f')} samples/s, {fmt(m['eval_peak_memory_mb'], '.0f')} MiB -> "
          f"{record['_path']}", flush=True)
    if record.get("error"):
        print(f"[bench]   {record['error'].strip().splitlines()[-1][:300]}", flush=True)
    return record


def table_row(r: dict, outcome: str) -> list:
    m, b = r["metrics"], r.get("bench", {})
    return [r["task"], r["attention"], b.get("batch_size"), b.get("seq_len"), outcome,
            fmt(m.get("train_throughput"), ".1f"), fmt(m.get("eval_throughput"), ".1f"),
            fmt(m.get("peak_memory_mb"), ".0f"), fmt(m.get("eval_peak_memory_mb"), ".0f"), r.get("num_params", "-")]


def print_ratios(rows: list, baseline: str) -> None:
    """Training throughput and training memory of each attention over the baseline's, per task."""
    by_cell = {(r[0], r[1]): r for r in rows}
    lines = []
    for task, attention, *_ in rows:
        base = by_cell.get((task, baseline))
        mine = by_cell[(task, attention)]
        if attention == baseline or base is None:
            continue
        ratio = [f"{float(a) / float(b):.2f}x" if a != "-" and b != "-" and float(b) else "-"
                 for a, b in ((mine[5], base[5]), (mine[7], base[7]))]
        lines.append([task, f"{attention} / {baseline}", *ratio])
    if lines:
        print()
        print(tabulate(lines, headers=["task", "ratio", "train samples/s", "train MiB"], disable_numparse=True))


def print_table(rows: list) -> None:
    print()
    print(tabulate(rows, headers=["task", "attention", "batch", "length", "status", "train samples/s",
                                  "eval samples/s", "train MiB", "eval MiB", "params"]))

