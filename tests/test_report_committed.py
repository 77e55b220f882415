"""The committed reference leaderboard is exactly what `lra report --reference` generates from the
committed records: no hand-edited tables. After adding reference records (or attentions), regenerate
it with `python -m lra.cli report --reference`. A user's own runs go elsewhere (output/) and never
touch it."""

import re
from pathlib import Path

from lra.report import build_report
from lra.core.records import REQUIRED_KEYS, read_records

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "reference"


def test_committed_leaderboard_is_generated_from_the_committed_records():
    records = read_records(RESULTS)
    assert records, "results/reference/runs/ holds the committed records"
    for r in records:
        missing = [k for k in REQUIRED_KEYS if k not in r]
        assert not missing, f"{r['_path']} lacks {missing}"
    expected = build_report(records, reference=True).markdown
    committed = (RESULTS / "LEADERBOARD.md").read_text()
    assert committed == expected, ("results/reference/LEADERBOARD.md is stale or edited: run "
                                   "`python -m lra.cli report --reference`")
    for name in re.findall(r"\]\(([\w./-]+\.png)\)", committed):  # analysis/ figures included
        assert (RESULTS / name).is_file(), f"figure {name} is referenced but not committed"


def test_figures_do_not_depend_on_the_process_hash_seed(tmp_path):
    """The PNGs are drawn in a fixed order, so two processes with different string-hash seeds write
    the same bytes (a set iterated in hash order once made the accuracy figure differ per run)."""
    import os
    import subprocess
    import sys

    root = ROOT
    pngs = []
    for seed in ("1", "2"):
        out = tmp_path / seed / "LEADERBOARD.md"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(root)}
        subprocess.run([sys.executable, "-m", "lra.cli", "report", "--results-dir", str(RESULTS), "--out", str(out),
                        "--quiet"], check=True, env=env, cwd=root, capture_output=True)
        pngs.append({p.name: p.read_bytes() for p in out.parent.glob("*.png")})
    assert pngs[0] and pngs[0] == pngs[1]
