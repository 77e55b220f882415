"""`lra report`: the Table 4 and Table 6 style leaderboards, from the result records.

    lra report                                   results/runs/*.json -> results/LEADERBOARD.md + PNGs
    lra report --results-dir R --out R/board.md  elsewhere
    lra report --check                           exit 1 if the file on disk is not what would be generated
    lra report --results-dir C --include results  a campaign's records beside the reference ones

What goes in (every record under <results-dir>/runs/):
- training records (`kind` "train", from `lra train` / `run_lra.py`): accuracy. Table 4 has one
  block per preset (paper, quick, smoke); per (attention, task) the mean +- sample std over seeds
  of the latest ok run of each seed. Runs that ended "oom", "diverged" or "failed" are shown as
  such and never averaged in.
- bench records (`kind` "bench", from `lra bench`) at the task's paper length with the paper model:
  training throughput T (samples/s) and training peak memory M (MiB) for Table 6, one table per
  device and precision; the latest record of each cell counts.
- scaling records (`kind` "scaling", from `lra bench --scaling`): time and memory against length,
  with the fitted log-log slopes, and the scaling figure.

Rows are attentions by what they compute: a record is shown under the registered name with the
same class and options (a run of `pola` with alpha=5 is a `pola-a5` run); runs with other options
get their own row. Every registered attention gets a row, "no run" where nothing was recorded.
Published numbers (lra/core/paper_numbers.py) sit beside ours, labelled as published, never averaged in.
Every number cites a source [S#] that lists its run ids, device and configuration.

The output is a pure function of the records and the registry (no clock, sorted everywhere), so a
test can prove that the committed leaderboard is exactly what this command generates.

The report is split by section, each owning its prose: lra/report/table4.py, table6.py,
scaling.py (time and memory against length) and tradeoff.py (accuracy against throughput);
document.py puts them in order and figures.py draws the PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import attentions
from lra.core.config import DEFAULT_RESULTS_DIR
from lra.core.records import read_records
from lra.report.document import Report, build_report
from lra_base.atomic import atomic_write_text
from lra_base.errors import ConfigError

__all__ = ["Report", "add_parser", "build_report", "cmd_report"]


# --- the command ------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Table 4 / Table 6 leaderboards (markdown + figures) from the records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=DEFAULT_RESULTS_DIR, help=f"where the records are (default {DEFAULT_RESULTS_DIR})")
    p.add_argument("--out", default=None, help="markdown file to write (default <results-dir>/LEADERBOARD.md); "
                                               "figures go beside it")
    p.add_argument("--include", action="append", default=[], metavar="DIR",
                   help="also read the records under DIR/runs (e.g. a campaign's beside the reference results); "
                        "repeatable")
    p.add_argument("--baseline", default=None, help="attention the ratios are to (default: the paper's, softmax)")
    p.add_argument("--no-figures", action="store_true", help="write the markdown only")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs from what would be "
                                                        "generated")
    p.add_argument("--quiet", action="store_true", help="do not print the report")
    p.set_defaults(func=cmd_report)


def cmd_report(args) -> int:
    results = Path(args.results_dir)
    if not (results / "runs").is_dir():
        raise ConfigError(f"no records: {results / 'runs'} does not exist. Run `lra train` or `lra bench` with "
                          f"--results-dir {results} first, or point --results-dir at the folder that holds runs/")
    out = Path(args.out) if args.out else results / "LEADERBOARD.md"
    if args.baseline is not None:
        attentions.get(args.baseline)  # unknown names fail with the valid ones
    records = read_records(results)
    for folder in args.include:
        if not (Path(folder) / "runs").is_dir():
            raise ConfigError(f"--include {folder}: {Path(folder) / 'runs'} does not exist")
        for r in read_records(folder):
            r["_rel"] = os.path.relpath(r["_path"], out.parent)  # cited from where the report is
            records.append(r)
    report = build_report(records, args.baseline, [os.path.relpath(f, out.parent) for f in args.include])
    if args.check:
        current = out.read_text() if out.exists() else None
        if current != report.markdown:
            print(f"{out} is not what `lra report` generates from {results / 'runs'}; regenerate it with "
                  f"`lra report --results-dir {results} --out {out}`", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, report.markdown)
    if not args.no_figures:
        try:
            for name, draw in sorted(report.figures.items()):
                draw(out.parent / name)
        except ModuleNotFoundError as exc:  # matplotlib, on a bare machine: the markdown is written
            print(f"[report] figures not drawn: the package {exc.name!r} is not installed (pip install {exc.name})",
                  file=sys.stderr)
            args.no_figures = True
    if not args.quiet:
        print(report.markdown)
    figs = "" if args.no_figures else f" and {len(report.figures)} figure(s): {', '.join(sorted(report.figures))}"
    print(f"[report] wrote {out}{figs}", file=sys.stderr)
    return 0
