"""`lra campaign`: the CPU rehearsal of the GPU command (every stage at toy sizes, on a machine
without the optional packages a bare GPU box lacks), a campaign killed mid-stage and run again,
the budget skipping what does not fit, and the budget arithmetic."""

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lra import campaign_plan as plan
from lra.cli import main
from lra.core.records import read_records

ROOT = Path(__file__).resolve().parent.parent

BLOCKER = textwrap.dedent('''
    # Makes the packages named in LRA_TEST_BLOCK impossible to import, as on a bare GPU box (the
    # variable reaches every child, so the campaign's children see the same machine).
    import os
    import sys

    BLOCKED = {n for n in os.environ.get("LRA_TEST_BLOCK", "").split(",") if n}


    class _Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None


    sys.meta_path.insert(0, _Blocker())
''')


def bare_box(tmp_path: Path, blocked: str) -> dict:
    """The environment of a python that cannot import `blocked` (a comma list)."""
    folder = tmp_path / "blocker"
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "LRA_TEST_BLOCK": blocked, "TQDM_DISABLE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(folder), str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def campaign(results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "lra.cli", "campaign", "--device", "cpu", "--tiny", "--results-dir", str(results),
            *extra]


def test_the_blocker_blocks(tmp_path):
    env = bare_box(tmp_path, "datasets,submitit")
    out = subprocess.run([sys.executable, "-c", "import lra.cli, lra.campaign\ntry:\n import datasets\nexcept "
                          "ModuleNotFoundError as e:\n print('blocked', e.name)"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "blocked datasets" in out.stdout, out.stderr
    swept = subprocess.run([sys.executable, "-m", "lra.cli", "sweep", "--executor", "local", "--results-dir",
                            str(tmp_path / "r")], env=env, capture_output=True, text=True, timeout=120)
    assert swept.returncode == 2 and "needs submitit" in swept.stderr


def test_cpu_rehearsal_runs_every_stage_on_a_bare_box(tmp_path):
    """The GPU command at toy sizes, as a bare GPU box runs it (no datasets, no submitit): every
    stage finishes, every record is on disk and in the one archive with the log and the report."""
    results = tmp_path / "campaign"
    t0 = time.monotonic()
    done = subprocess.run(campaign(results), env=bare_box(tmp_path, "datasets,submitit"), capture_output=True,
                          text=True, timeout=600)
    seconds = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    state = json.loads((results / "campaign.json").read_text())
    assert {k: v["status"] for k, v in state["stages"].items()} == dict.fromkeys(plan_order(), "done"), out[-3000:]
    pre = json.loads((results / "preflight.json").read_text())
    assert pre["ok"] and pre["machine"]["packages"]["datasets"] is None and pre["machine"]["packages"]["submitit"] is None
    assert "optional packages missing: datasets, submitit" in out
    assert len(pre["steps"]) >= 13 and all(s["status"] == "ok" for s in pre["steps"].values())

    recs = read_records(results)
    bench = [r for r in recs if r["kind"] == "bench"]
    trained = [r for r in recs if r["kind"] == "train"]
    assert len(bench) == 12 and all(r["status"] == "ok" for r in bench)  # 6 tasks x 2 attentions, Path-X included
    assert {p["isolation"] for r in bench for p in r["bench"]["phases"].values()} == {"one process per task"}
    assert len(trained) == 4 and {r["preset"] for r in trained} == {"quick"} and all(r["status"] == "ok" for r in trained)
    board = (results / "LEADERBOARD.md").read_text()
    assert "REHEARSAL" in board and "quick preset: a tenth of the paper's steps" in board

    with tarfile.open(results / "campaign.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"campaign.json", "campaign.log", "preflight.json", "LEADERBOARD.md"} <= names
    assert {f"runs/{Path(r['_path']).name}" for r in recs} <= names
    assert (results / "campaign.tar.gz").stat().st_size <= 16 * 2**20
    print(f"\nCPU rehearsal: {seconds:.0f} s wall, load {os.getloadavg()[0]:.1f}")


def plan_order():
    from lra.campaign_stages import ORDER

    return ORDER


def test_a_campaign_killed_mid_stage_keeps_what_finished_and_skips_it_when_run_again(tmp_path):
    """SIGKILL to the whole campaign in the middle of the bench: the preflight, the bench records
    written so far and the archive are intact; the same command skips the finished stage and the
    recorded cells. matplotlib is missing too: the report says so and writes the markdown."""
    results = tmp_path / "campaign"
    env = bare_box(tmp_path, "datasets,submitit,matplotlib")
    cmd = campaign(results, "--stages", "preflight,bench,report", "--reference-dir", "none")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline and proc.poll() is None:
        runs = list((results / "runs").glob("*.json")) if (results / "runs").exists() else []
        if runs:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the campaign ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()

    state = json.loads((results / "campaign.json").read_text())
    assert state["stages"]["preflight"]["status"] == "done" and state["stages"]["bench"]["status"] == "running"
    assert json.loads((results / "preflight.json").read_text())["ok"]
    before = {r["run_id"] for r in read_records(results)}
    assert 1 <= len(before) < 12
    with tarfile.open(results / "campaign.tar.gz") as tar:
        assert "preflight.json" in tar.getnames()  # packed when the preflight finished

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    assert "preflight: finished in an earlier run" in out
    recs = read_records(results)
    assert before <= {r["run_id"] for r in recs} and len(recs) == 12  # nothing measured twice
    assert "figures not drawn: the package 'matplotlib' is not installed" in out
    assert (results / "LEADERBOARD.md").exists() and not list(results.glob("*.png"))


def test_the_budget_skips_what_does_not_fit(tmp_path, capsys):
    results = tmp_path / "c"
    code = main(["campaign", "--device", "cpu", "--tiny", "--budget-minutes", "0.1", "--results-dir", str(results),
                 "--reference-dir", "none"])
    out = capsys.readouterr().out
    assert code == 0
    assert "preflight: skipped: needs about 30 s, 1 s of the budget left" in out
    for stage in ("bench", "data", "train"):
        assert f"[campaign] {stage}: skipped:" in out
    state = json.loads((results / "campaign.json").read_text())
    assert state["stages"]["report"]["status"] == "done" and state["stages"]["bench"]["status"] == "skipped"
    assert (results / "campaign.tar.gz").exists() and (results / "LEADERBOARD.md").exists()
    # another machine's campaign is not continued by mistake
    assert main(["campaign", "--device", "cpu", "--results-dir", str(results)]) == 2
    assert "is a campaign with settings" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["campaign", "--device", "cuda", "--results-dir", str(tmp_path / "g")]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def test_budget_arithmetic():
    c = SimpleNamespace(tiny=False, device="cuda", results=Path("/nonexistent"), data_dir=Path("/nonexistent"), state={})
    n = plan.pathfinder_generate(c, left=10.0)["images"]
    assert n == plan.PATHFINDER_MIN  # never fewer than 20k
    assert plan.pathfinder_generate(c, left=1e6)["images"] == plan.PATHFINDER_MAX
    assert plan.too_small(c, "pathfinder", 19_999) and plan.too_small(c, "pathfinder", 20_000) is None
    packing = plan.Packing(5)
    assert packing.factor == 3.0
    packing.learn([(30.0, 10.0), (20.0, 10.0), (25.0, None)])
    assert packing.factor == 2.5
    assert plan.calibrate(1.0, 10.0, 15.0) == 1.5 and plan.calibrate(1.0, 0.0, 15.0) == 1.0


def test_the_readme_gpu_command_is_a_valid_campaign_command():
    """The one command the README gives a GPU owner parses with today's flags (it cannot rot)."""
    import re

    from lra.cli import build_parser

    readme = (ROOT / "README.md").read_text()
    (command,) = re.findall(r"^    python -m lra\.cli (campaign --device cuda .*)$", readme, re.M)
    args = build_parser().parse_args(command.split())
    assert args.device == "cuda" and args.budget_minutes == 9 and args.func.__module__ == "lra.campaign"
