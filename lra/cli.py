"""The `lra` command (and `python run_lra.py`, which is `lra train`).

    lra train --task listops --attention softmax --preset smoke      train, test, write a record
    lra list                                                        attentions, tasks, presets
    lra data generate|prepare|verify|download TASK --data-dir DIR     datasets
    lra bench ...                                                   throughput and peak memory
    lra report ...                                                  leaderboards from the records

Errors a user can cause print one clear message (no traceback) and exit with status 2.
Set LRA_DEBUG=1 to see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from lra.errors import ConfigError, LRAError

DEFAULT_DATA_DIR = os.environ.get("LRA_DATA_DIR", "data")
DEFAULT_RESULTS_DIR = os.environ.get("LRA_RESULTS_DIR", "results")


def key_value(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), v.strip()


# --- train -----------------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("what to run")
    g.add_argument("--task", default="listops",
                   help="task name (see `lra list`); default listops. A comma list or `all` runs a grid")
    g.add_argument("--attention", default=None,
                   help="attention name (see `lra list`); default: the suite's headline method. "
                        "A comma list or `all` runs a grid")
    g.add_argument("--preset", default="smoke", help="smoke | quick | paper (default smoke)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("-o", "--option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="attention option, e.g. -o alpha=5 (repeatable)")
    g.add_argument("--task-option", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                   help="task option (repeatable)")
    o = p.add_argument_group("overrides of the preset")
    o.add_argument("--steps", type=int)
    o.add_argument("--batch-size", type=int)
    o.add_argument("--lr", type=float)
    o.add_argument("--warmup", type=int)
    o.add_argument("--eval-every", type=int)
    o.add_argument("--seq-len", type=int)
    o.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    o.add_argument("--num-workers", type=int, help="DataLoader worker processes")
    o.add_argument("--set", action="append", type=key_value, default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. --set model.dim=128 --set train.grad_clip_mode=norm")
    r = p.add_argument_group("where and how")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    r.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=f"where datasets live (default {DEFAULT_DATA_DIR}, env LRA_DATA_DIR)")
    r.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"where records go (default {DEFAULT_RESULTS_DIR}, env LRA_RESULTS_DIR)")
    r.add_argument("--resume", action="store_true", help="continue from this run's last checkpoint")
    r.add_argument("--checkpoint-every", type=int, default=None, metavar="K",
                   help="write a checkpoint every K steps (default: at every evaluation)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar")
    from lra.grid import add_grid_arguments

    add_grid_arguments(p)


def config_from_args(args):
    import attentions
    from lra.config import set_field
    from lra.presets import make_config

    cfg = make_config(args.task, args.preset, seed=args.seed, device=args.device, data_dir=args.data_dir,
                      results_dir=args.results_dir, attention=args.attention or attentions.default_name())
    cfg.attention_options = dict(args.option)
    cfg.data.options = dict(args.task_option)
    flags = {"steps": "train.steps", "batch_size": "train.batch_size", "lr": "train.lr", "warmup": "train.warmup",
             "eval_every": "train.eval_every", "seq_len": "data.seq_len", "precision": "train.precision",
             "num_workers": "data.num_workers"}
    for flag, key in flags.items():
        if getattr(args, flag) is not None:
            set_field(cfg, key, getattr(args, flag))
    if args.steps is not None and args.warmup is None:
        cfg.train.warmup = min(cfg.train.warmup, max(1, args.steps // 10))  # keep the warm-up inside a shortened run
    for key, value in args.set:
        set_field(cfg, key, value)
    attentions.resolve(cfg.attention, **cfg.attention_options)  # fail before any work
    return cfg


def cmd_train(args) -> int:
    from lra import distributed, grid, train

    if grid.is_grid(args):  # several cells: each in its own process
        return grid.run_grid(args)
    cfg = config_from_args(args)
    every = args.checkpoint_every if args.checkpoint_every is not None else cfg.train.eval_every
    try:
        record = train.run(cfg, resume=args.resume, checkpoint_every=every, progress=not args.no_progress)
    finally:
        distributed.shutdown()
    if distributed.from_env().is_main:  # under torchrun, one summary
        print_summary([record])
    return 0 if record["status"] == "ok" else 1


def print_summary(records: list[dict]) -> None:
    from tabulate import tabulate

    def fmt(x, spec):
        return "-" if x is None else format(x, spec)

    rows = []
    for r in records:
        m = r["metrics"]
        rows.append([r["task"], r["attention"], r["preset"], r["seed"], r["status"], r["steps"],
                     fmt(m.get("test_accuracy"), ".2f"), fmt(m.get("best_val_accuracy"), ".2f"),
                     fmt(m.get("train_throughput"), ".1f"), fmt(m.get("eval_throughput"), ".1f"),
                     fmt(m.get("peak_memory_mb"), ".1f"), r.get("num_params", "-")])
    print(tabulate(rows, headers=["task", "attention", "preset", "seed", "status", "steps", "test acc %",
                                  "best dev %", "train samples/s", "eval samples/s", "peak MiB", "params"]))
    for r in records:
        if r.get("path"):
            print(f"record: {r['path']}  ({r['env']['device_name']}, {r['env']['dtype']})")
        if r.get("error"):
            print(f"{r['status']}: {r['error'].strip().splitlines()[-1]}")


# --- list --------------------------------------------------------------------------------------------


def cmd_list(args) -> int:
    from tabulate import tabulate

    import attentions
    import tasks
    from lra.presets import PRESETS

    rows = []
    for name in attentions.available():
        e = attentions.get(name)
        rows.append([name, e.complexity or "-", e.description])
    print("Attentions (options: `lra list --options`; pass with -o KEY=VALUE)\n")
    print(tabulate(rows, headers=["name", "complexity", "description"]))
    if args.options:
        print()
        for name in attentions.available():
            print(f"{name}: {attentions.describe_options(name)}")
    rows = [[t.name, t.max_len, t.num_inputs, t.num_classes, t.vocab_size, t.description]
            for t in map(tasks.get, tasks.available())]
    print("\nTasks\n")
    print(tabulate(rows, headers=["name", "length", "inputs", "classes", "vocab", "description"]))
    print(f"\nPresets: {', '.join(PRESETS)} (default: attention {attentions.default_name()}, preset smoke)")
    return 0


# --- main ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from lra import data_cli

    parser = argparse.ArgumentParser(prog="lra", description="Long Range Arena benchmark suite")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("train", help="train and test one configuration")
    add_train_arguments(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("list", help="registered attentions, tasks and presets")
    p.add_argument("--options", action="store_true", help="show every attention's options")
    p.set_defaults(func=cmd_list)
    data_cli.add_parser(sub)
    for module in ("lra.bench", "lra.report", "lra.sweep"):  # commands in their own modules
        try:
            mod = __import__(module, fromlist=["add_parser"])
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LRAError as exc:
        if os.environ.get("LRA_DEBUG"):
            raise
        from lra.train import Interrupted

        print(f"error: {exc}" if not isinstance(exc, Interrupted) else f"stopped: {exc}", file=sys.stderr)
        return 128 + exc.signum if isinstance(exc, Interrupted) else 2


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python run_lra.py ...` = `lra train ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
