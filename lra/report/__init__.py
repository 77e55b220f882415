"""`lra report`: the Table 4 and Table 6 style leaderboards, from the result records.

    lra report                                   your records: output/runs/*.json -> output/LEADERBOARD.md + PNGs
    lra report --with-reference                  the same, the suite's reference results in a section after yours
    lra report --reference                       regenerate the committed results/reference/LEADERBOARD.md
    lra report --results-dir R --out R/board.md  elsewhere
    lra report --check                           exit 1 if the file on disk is not what would be generated
    lra report --results-dir C --include results/reference  a campaign's records beside the reference ones

It prints a short summary (records, accuracy per preset / task / attention, measurements per
machine) and where the file went; --print shows the markdown itself.

Your results and the suite's stay apart: your runs go to output/ (--results-dir, LRA_RESULTS_DIR),
the reference records the suite ships with live in results/reference/ and are written only by
commands that name that folder (the reference leaderboard's header lists them).

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
from lra.core.config import DEFAULT_RESULTS_DIR, REFERENCE_DIR
from lra.core.records import read_records
from lra.report.document import Report, build_report, with_reference
from lra.report.summary import summary
from lra_base.atomic import atomic_write_text, check_writable
from lra_base.errors import ConfigError

__all__ = ["Report", "add_parser", "build_report", "cmd_report"]


# --- the command ------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="Table 4 / Table 6 leaderboards (markdown + figures) from the records",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default=None,
                   help=f"where the records are (default {DEFAULT_RESULTS_DIR}, env LRA_RESULTS_DIR)")
    p.add_argument("--out", default=None, help="markdown file to write (default <results-dir>/LEADERBOARD.md); "
                                               "figures go beside it")
    p.add_argument("--include", action="append", default=[], metavar="DIR",
                   help="also read the records under DIR/runs (e.g. a campaign's beside the reference results); "
                        "repeatable")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--with-reference", action="store_true",
                       help="add the suite's reference results (results/reference/) in a labelled section after yours")
    which.add_argument("--reference", action="store_true",
                       help="regenerate the reference leaderboard from results/reference/runs (maintainers)")
    p.add_argument("--baseline", default=None, help="attention the ratios are to (default: the paper's, softmax)")
    p.add_argument("--no-figures", action="store_true", help="write the markdown only")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out differs from what would be "
                                                        "generated")
    p.add_argument("--print", action="store_true", dest="print_markdown", help="print the markdown too")
    p.add_argument("--quiet", action="store_true", help="print only where the file went")
    p.set_defaults(func=cmd_report)


def records_folder(args) -> Path:
    if args.reference:
        if args.results_dir is not None and Path(args.results_dir).resolve() != REFERENCE_DIR:
            raise ConfigError("--reference reads results/reference; drop --results-dir (or drop --reference)")
        return REFERENCE_DIR
    results = Path(args.results_dir or DEFAULT_RESULTS_DIR)
    if not (results / "runs").is_dir():
        hint = (f"run `python run_lra.py` (or `lra train` / `lra bench`) first, which write there, or point "
                f"--results-dir at the folder that holds runs/; the suite's own results are in {REFERENCE_DIR} "
                f"(`lra report --reference` regenerates its LEADERBOARD.md)")
        raise ConfigError(f"no records: {results / 'runs'} does not exist. {hint}")
    return results


def cmd_report(args) -> int:
    results = records_folder(args)
    out = Path(args.out) if args.out else results / "LEADERBOARD.md"
    if args.baseline is not None:
        attentions.get(args.baseline)  # unknown names fail with the valid ones
    if not args.check:
        check_writable(out.parent, "the report", "pass --out FILE in a folder you can write")
    records = read_records(results) + included_records(args.include, out)
    reference = args.reference or results.resolve() == REFERENCE_DIR  # its header names its own regeneration
    report = build_report(records, args.baseline, reference=reference,
                          included=[os.path.relpath(f, out.parent) for f in args.include])
    if args.with_reference:
        if not (REFERENCE_DIR / "runs").is_dir():
            raise ConfigError(f"--with-reference: no reference records at {REFERENCE_DIR / 'runs'} (they come with "
                              "a clone of the suite's repository)")
        report = with_reference(report, build_report(read_records(REFERENCE_DIR), args.baseline, reference=True))
    if args.check:
        return check(out, report, results, reference)
    atomic_write_text(out, report.markdown)
    if not args.no_figures:
        args.no_figures = not draw_figures(report, out.parent)
    if args.print_markdown:
        print(report.markdown)
    elif not args.quiet:
        print("\n".join(summary(records)))
    figs = "" if args.no_figures else f" and {len(report.figures)} figure(s): {', '.join(sorted(report.figures))}"
    print(f"[report] wrote {out}{figs}", file=sys.stderr)
    return 0


def included_records(folders: list[str], out: Path) -> list[dict]:
    """The records under each DIR/runs of --include, cited relative to where the report is."""
    records = []
    for folder in folders:
        if not (Path(folder) / "runs").is_dir():
            raise ConfigError(f"--include {folder}: {Path(folder) / 'runs'} does not exist")
        for r in read_records(folder):
            r["_rel"] = os.path.relpath(r["_path"], out.parent)
            records.append(r)
    return records


def draw_figures(report: Report, folder: Path) -> bool:
    """Draw the report's figures into `folder`; False when matplotlib is missing (a bare GPU image:
    the markdown is written all the same)."""
    try:
        for name, draw in sorted(report.figures.items()):
            draw(folder / name)
    except ModuleNotFoundError as exc:
        print(f"[report] figures not drawn: the package {exc.name!r} is not installed (pip install {exc.name})",
              file=sys.stderr)
        return False
    return True


def check(out: Path, report: Report, results: Path, reference: bool) -> int:
    current = out.read_text() if out.exists() else None
    if current != report.markdown:
        again = "lra report --reference" if reference else f"lra report --results-dir {results} --out {out}"
        print(f"{out} is not what `lra report` generates from {results / 'runs'}; regenerate it with `{again}`",
              file=sys.stderr)
        return 1
    print(f"{out} is up to date")
    return 0
