"""The `lra` command (and `python run_lra.py`, which is `lra train`).

    lra train --task listops --attention softmax --preset smoke      train, test, write a record
    lra list                                                        attentions, tasks, presets
    lra data generate|prepare|verify|download TASK --data-dir DIR     datasets
    lra bench ...                                                   throughput and peak memory
    lra report ...                                                  leaderboards from the records
    lra analyze ...                                                 attention maps of trained runs
    lra sweep ...                                                   grid cells as cluster jobs
    lra campaign --device cuda --budget-minutes 9                   a device session -> the leaderboard

Each command lives in its own module with its `add_parser`; this one only assembles them. Errors
a user can cause print one clear message (no traceback) and exit with status 2; a file-system
failure no check foresaw prints its one line (the file and the reason) and exits with status 1;
output piped into a reader that stops early (`lra ... | head`) ends quietly. Set LRA_DEBUG=1 to
see the traceback anyway.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from tabulate import tabulate

import attentions
import tasks
from lra import analyze, bench, campaign, data_cli, report, sweep, train
from lra.core.presets import PRESETS
from lra_base.errors import LRAError

# Imported only where used (a bare GPU box may lack them): a command that needs one says so.
OPTIONAL = ("datasets", "submitit", "matplotlib", "huggingface_hub")


def cmd_list(args) -> int:
    rows = [[name, attentions.get(name).complexity or "-", attentions.get(name).description]
            for name in attentions.available()]
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lra", description="Long Range Arena benchmark suite")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    train.add_parser(sub)
    p = sub.add_parser("list", help="registered attentions, tasks and presets")
    p.add_argument("--options", action="store_true", help="show every attention's options")
    p.set_defaults(func=cmd_list)
    for command in (data_cli, bench, report, sweep, analyze, campaign):
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not at interpreter exit
        return code
    except train.Interrupted as exc:
        print(f"stopped: {exc}", file=sys.stderr)
        return 128 + exc.signum
    except LRAError as exc:
        if os.environ.get("LRA_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL or os.environ.get("LRA_DEBUG"):
            raise
        print(f"error: this needs the package {exc.name!r}, which is not installed (pip install {exc.name}); "
              "everything else runs without it", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader has what it wanted; nothing more can be printed
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as a process ended by SIGPIPE
    except OSError as exc:
        if os.environ.get("LRA_DEBUG"):
            raise
        print(f"error: {exc} (LRA_DEBUG=1 shows where)", file=sys.stderr)
        return 1


def train_main(argv: Sequence[str] | None = None) -> int:
    """`python run_lra.py ...` = `lra train ...`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return main(["train", *argv])


if __name__ == "__main__":
    sys.exit(main())
