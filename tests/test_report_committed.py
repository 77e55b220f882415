"""The committed leaderboard is exactly what `lra report` generates from the committed records: no
hand-edited tables. After adding records (or attentions), regenerate with `python -m lra.cli report`."""

import re
from pathlib import Path

from lra.report import build_report
from lra.results import REQUIRED_KEYS, read_records

RESULTS = Path(__file__).resolve().parent.parent / "results"


def test_committed_leaderboard_is_generated_from_the_committed_records():
    records = read_records(RESULTS)
    assert records, "results/runs/ holds the committed records"
    for r in records:
        missing = [k for k in REQUIRED_KEYS if k not in r]
        assert not missing, f"{r['_path']} lacks {missing}"
    expected = build_report(records).markdown
    committed = (RESULTS / "LEADERBOARD.md").read_text()
    assert committed == expected, "results/LEADERBOARD.md is stale or edited: run `python -m lra.cli report`"
    for name in re.findall(r"\]\(([\w.-]+\.png)\)", committed):
        assert (RESULTS / name).is_file(), f"figure {name} is referenced but not committed"
