"""`lra report`: aggregation over seeds, statuses, bold, published rows, Table 6 ratios, scaling
slopes, traceability and determinism, on records written in the real format to a real folder."""

import json
import random
import re
from dataclasses import asdict

import pytest

import attentions
from lra.core import paper_numbers as paper
from lra.cli import main
from lra.core.config import ModelConfig
from lra.report import build_report
from lra.core.records import read_records, write_record

ENV = {"device": "cpu", "device_name": "Test CPU (2 cores, 2 threads)", "dtype": "float32", "torch": "2.13.0",
       "cuda": None, "git_sha": "0123456789abcdef"}
_clock = iter(range(10_000))


def record(task, attention, *, kind="train", preset="smoke", seed=0, status="ok", acc=None, options=None,
           train_tp=None, mem=None, step_s=None, seq_len=None, batch=None, scaling=None, env=None):
    """A record with every contract key, as lra/train.py or lra/bench.py writes it."""
    import tasks

    t = tasks.get(task) if task in tasks.available() else None
    opts = options if options is not None else attentions.options_dict(attentions.resolve(attention))
    seq_len = seq_len or (t.recipe.seq_len if t else 1024)
    batch = batch or (t.recipe.batch_size if t else 32)
    n = next(_clock)
    rec = {
        "run_id": f"{task}-{attention}-{preset}-s{seed}-{n:05d}", "task": task, "attention": attention,
        "attention_options": opts, "preset": "bench" if kind != "train" else preset, "seed": seed, "status": status,
        "metrics": {"test_accuracy": acc, "best_val_accuracy": acc, "train_throughput": train_tp,
                    "eval_throughput": None if train_tp is None else 3 * train_tp, "peak_memory_mb": mem,
                    "train_step_seconds": step_s},
        "steps": 100, "num_params": 1000,
        "config": {"task": task, "attention": attention, "attention_options": opts, "preset": preset, "seed": seed,
                   "model": asdict(ModelConfig()), "train": {"batch_size": batch, "precision": "auto", "lr": 1e-3},
                   "data": {"seq_len": seq_len}},
        "env": env or ENV, "created_at": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}+00:00", "kind": kind,
    }
    if kind != "train":
        rec["bench"] = {"batch_size": batch, "paper_batch_size": t.recipe.batch_size if t else 32,
                        "batch_reason": "paper batch", "seq_len": seq_len,
                        "paper_seq_len": t.recipe.seq_len if t else 1024, "phases": {"train": {"status": status}}}
    if scaling:
        rec["scaling"] = scaling
    return rec


def write_all(tmp_path, recs):
    for r in recs:
        write_record(tmp_path, r)
    return read_records(tmp_path)


def split(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def cell(markdown: str, row_start: str, column: str, offset: int = 0) -> str:
    """A table cell: in the first row starting with `row_start` (or `offset` rows below it), the
    column named `column` in that table's header."""
    lines = markdown.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith(row_start)) + offset
    j = i
    while not lines[j].startswith("|:"):
        j -= 1
    return split(lines[i])[split(lines[j - 1]).index(column)]


def sources(markdown: str) -> dict:
    return dict(re.findall(r"^- \[(S\d+)\] (.*)$", markdown, re.M))


@pytest.fixture
def toy(toy_with_presets):
    """A second registered attention with presets, one equal to the defaults."""
    toy_with_presets("toyq")


def test_table4_mean_std_statuses_latest_per_seed_and_bold(tmp_path, toy):
    recs = write_all(tmp_path, [
        record("listops", "softmax", seed=0, acc=10.0),  # superseded by the later run of seed 0
        record("listops", "softmax", seed=0, acc=60.0),
        record("listops", "softmax", seed=1, acc=62.0),
        record("listops", "softmax", seed=2, acc=64.0),
        record("listops", "softmax", seed=3, status="diverged"),
        record("listops", "toyq", options={"a": 2}, acc=70.0),  # toyq with a=2 is toyq-a2
        record("listops", "toyq-a1", status="oom"),
    ])
    md = build_report(recs).markdown
    soft = cell(md, "| softmax ", "ListOps")
    assert soft.startswith("62.00 ± 2.00 (n=3; 1 diverged)")
    assert cell(md, "| toyq-a2 ", "ListOps").startswith("**70.00 (n=1)**")  # best of ours: bold
    assert cell(md, "| toyq-a1 ", "ListOps").startswith("1 oom")
    assert cell(md, "| softmax ", "Text") == "no run"
    assert cell(md, "| softmax ", "Avg (5 tasks)") == "needs all 5 (1/5)"
    assert "| toyq " not in md  # toyq is the same computation as toyq-a1: folded into its row
    assert "nan" not in md.lower()
    # the published row sits right under ours, labelled, with the paper's numbers and its own bold
    lines = md.splitlines()
    i = next(k for k, l in enumerate(lines) if l.startswith("| softmax "))
    assert "published" in lines[i + 1] and "38.71" in lines[i + 1] and "Transformer (softmax)" in lines[i + 1]
    assert "**73.06**" in md  # Pola alpha=3, best published Text
    # every seed counted in a cell is traceable from its source note
    ref = re.search(r"\[(S\d+)\]", soft).group(1)
    note = sources(md)[ref]
    for r in recs:
        if r["attention"] == "softmax" and r["metrics"]["test_accuracy"] != 10.0:
            assert r["run_id"] in note
    assert "Test CPU" in note and "preset smoke" in note and "git 0123456789" in note


def test_average_needs_all_five_tasks(tmp_path):
    recs = write_all(tmp_path, [record(t, "softmax", acc=50.0 + i, preset="paper")
                                for i, t in enumerate(paper.TASKS)] + [record("pathx", "softmax", acc=10.0, preset="paper")])
    md = build_report(recs).markdown
    assert cell(md, "| softmax ", "Avg (5 tasks)") == "**52.00**"  # Path-X is not in the paper's average
    assert cell(md, "| softmax ", "Path-X").startswith("**10.00 (n=1)** [S")
    assert "### paper preset" in md


def test_table6_ratios_like_the_paper_and_missing_cells(tmp_path, toy):
    recs = write_all(tmp_path, [
        record("listops", "softmax", kind="bench", train_tp=100.0, mem=400.0),
        record("listops", "toyq-a2", kind="bench", train_tp=250.0, mem=100.0),
        record("listops", "toyq-a1", kind="bench", status="oom"),
        record("listops", "softmax", acc=40.0), record("listops", "toyq-a2", acc=43.5),
        # not the paper length: listed among the records, kept out of Table 6
        record("listops", "softmax", kind="bench", train_tp=999.0, mem=1.0, seq_len=512),
    ])
    md = build_report(recs).markdown
    t6 = md[md.index("## Table 6"):md.index("### Every bench record")]
    assert split(t6.split("| ListOps (2k)")[1].splitlines()[2])[1:3] == ["T", "ours"]
    t = lambda col: cell(t6, "| ListOps (2k)", col, offset=2)
    assert t("softmax").startswith("100.0 [S") and t("toyq-a2").startswith("250.0 [S")
    assert t("toyq-a1").startswith("oom [S")
    assert cell(t6, "| ListOps (2k)", "softmax", offset=4).startswith("400 [S")  # M, MiB
    assert "999.0" not in t6
    avg = lambda col, k: cell(t6, "| Avg (vs softmax)", col, offset=k)
    assert avg("toyq-a2", 0) == "+3.50 (1 task)"  # A: mean difference
    assert avg("toyq-a2", 2) == "x2.50 (1 task)"  # T: ratio
    assert avg("toyq-a2", 4) == "x0.25 (1 task)"  # M: ratio
    assert avg("nystrom", 3) == "x2.29"  # the paper's column, even unregistered here
    assert "999.0" in md  # the off-shape record is still listed with the others


def test_scaling_slopes_and_skips(tmp_path):
    info = {"sweep_id": "abc", "lengths": [256, 512, 1024, 2048], "batch_size": 1, "fit_points": 4,
            "stop_reason": None, "skipped_lengths": []}
    recs = [record("listops", "softmax", kind="scaling", seq_len=n, train_tp=1.0, step_s=1e-6 * n * n,
                   mem=1e-3 * n * n, scaling=dict(info)) for n in (256, 512, 1024)]
    recs[-1]["scaling"].update(stop_reason="a training step took 30 s", skipped_lengths=[2048])
    md = build_report(write_all(tmp_path, recs)).markdown
    sc = md[md.index("## Scaling"):md.index("## Accuracy against")]
    row = next(l for l in sc.splitlines() if l.startswith("| softmax [S"))
    values = [c.strip() for c in row.strip("|").split("|")]
    assert values[1:] == ["65.5", "262.1", "1048.6", "skipped", "2.00"]
    assert "stopped: a training step took 30 s; not measured: 2048" in sc
    assert "scaling-cpu.png" in sc


def test_report_is_deterministic_and_the_cli_writes_figures(tmp_path, capsys):
    recs = [record("listops", "softmax", seed=s, acc=30.0 + s) for s in range(3)]
    recs += [record("listops", "softmax", kind="bench", train_tp=10.0, mem=50.0)]
    recs += [record("listops", "softmax", kind="scaling", seq_len=n, train_tp=1.0, step_s=1e-3 * n, mem=0.1 * n,
                    scaling={"sweep_id": "s1", "lengths": [256, 512], "batch_size": 1, "fit_points": 4})
             for n in (256, 512)]
    loaded = write_all(tmp_path, recs)
    first = build_report(loaded).markdown
    shuffled = list(loaded)
    random.Random(0).shuffle(shuffled)
    assert build_report(shuffled).markdown == first
    assert re.search(r"20\d\d-\d\d-\d\d", first) is None  # no dates or clock times in the markdown

    assert main(["report", "--results-dir", str(tmp_path), "--quiet"]) == 0
    out = tmp_path / "LEADERBOARD.md"
    assert out.read_text() == first
    for name in re.findall(r"\]\(([\w.-]+\.png)\)", first):
        png = tmp_path / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["report", "--results-dir", str(tmp_path), "--check"]) == 0
    out.write_text(first.replace("30.0", "31.0") + "edited by hand\n")
    assert main(["report", "--results-dir", str(tmp_path), "--check"]) == 1
    assert "not what `lra report` generates" in capsys.readouterr().err


def test_report_without_records_says_what_to_do(tmp_path, capsys):
    assert main(["report", "--results-dir", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_published_numbers_are_consistent_with_the_papers_own_averages():
    """Transcription check: each Table 4 average is the mean of its five tasks, and each Table 6
    average ratio is the ratio of the per-task means (how the report computes ours)."""
    for row in paper.TABLE4:
        if row.accuracy:
            assert set(row.accuracy) == set(paper.TASKS)
            assert sum(row.accuracy.values()) / 5 == pytest.approx(row.average, abs=0.006), row.label
    base = next(c for c in paper.TABLE6 if c.throughput_ratio == 1.0)
    for col in paper.TABLE6:
        t = sum(col.throughput.values()) / sum(base.throughput.values())
        m = sum(col.memory.values()) / sum(base.memory.values())
        assert m == pytest.approx(col.memory_ratio, abs=0.0101), col.label  # Pola M: 0.227 printed 0.22
        if col.label in paper.TABLE6_INCONSISTENT:  # the paper's own average disagrees with its cells
            assert f"{t:.2f}" in paper.TABLE6_INCONSISTENT[col.label]
        else:
            assert t == pytest.approx(col.throughput_ratio, abs=0.0101), col.label


def test_records_written_with_the_old_impl_names_read_as_the_new_ones(tmp_path):
    """Before one vocabulary served every attention, impl was sdpa / linear / quadratic."""
    from lra.core.records import read_records

    from lra.core.records import REQUIRED_KEYS

    old = {**{k: None for k in REQUIRED_KEYS}, "attention": "pola", "attention_options": {"impl": "quadratic"},
           "config": {"attention_options": {"impl": "linear"}}}
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a.json").write_text(json.dumps(old))
    rec, = read_records(tmp_path)
    assert rec["attention_options"] == {"impl": "reference"} and rec["config"]["attention_options"] == {"impl": "fast"}


def test_table6_gives_quick_and_paper_accuracy_their_own_rows_and_a_cuda_table_beside_the_cpu_one(tmp_path):
    """A campaign's report: CUDA and CPU Table 6 each under their own heading (CUDA first), the
    quick preset's accuracy in a row of its own, labelled, never averaged with paper or smoke."""
    gpu = {**ENV, "device": "cuda", "device_name": "NVIDIA Test GPU", "dtype": "bfloat16", "cuda": "13.0"}
    recs = write_all(tmp_path, [
        record("listops", "softmax", kind="bench", train_tp=100.0, mem=400.0),
        record("listops", "softmax", kind="bench", train_tp=9000.0, mem=800.0, env=gpu),
        record("listops", "softmax", preset="smoke", acc=20.0),
        record("listops", "softmax", preset="quick", acc=30.0),
        record("listops", "softmax", preset="paper", acc=37.0),
    ])
    md = build_report(recs).markdown
    t6 = md[md.index("## Table 6"):md.index("### Every bench record")]
    assert t6.index("### NVIDIA Test GPU, bfloat16") < t6.index("### Test CPU")
    assert cell(t6, "| ListOps (2k)", "softmax", offset=0) == "37.00"
    assert split(t6.split("| ListOps (2k)")[1].splitlines()[0])[2] == "ours (paper preset)"
    quick = t6.split("| ListOps (2k)")[1].splitlines()[1]
    assert split(quick)[2] == "ours (quick preset: a tenth of the paper's steps)" and "30.00" in quick
    assert "20.00" not in t6  # the smoke check stays in Table 4
    assert "one row per preset: paper, quick" in md


def test_report_include_reads_another_folder_and_cites_it(tmp_path, capsys):
    campaign, reference = tmp_path / "campaign", tmp_path / "reference"
    write_all(campaign, [record("listops", "softmax", preset="quick", acc=30.0)])
    write_all(reference, [record("listops", "softmax", kind="bench", train_tp=100.0, mem=400.0)])
    assert main(["report", "--results-dir", str(campaign), "--include", str(reference), "--no-figures",
                 "--quiet"]) == 0
    md = (campaign / "LEADERBOARD.md").read_text()
    assert "and under `../reference/runs/`" in md and "record ../reference/runs/listops-softmax-smoke" in md
    assert "100.0 [S" in md and "30.00" in md
    assert main(["report", "--results-dir", str(campaign), "--include", str(tmp_path / "nope")]) == 2
def test_the_cli_prints_a_summary_not_the_file_and_can_add_the_reference_labelled(tmp_path, capsys):
    write_all(tmp_path, [record("listops", "softmax", seed=s, acc=30.0 + s) for s in range(2)])
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "2 records" in out and "31.50" not in out and "30.50" in out and "## Table 4" not in out
    assert len(out) < 2000
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures", "--print"]) == 0
    assert "## Table 4" in capsys.readouterr().out
    board = (tmp_path / "LEADERBOARD.md").read_text()
    assert "your result records" in board and "Reference results" not in board
    assert main(["report", "--results-dir", str(tmp_path), "--no-figures", "--with-reference", "--quiet"]) == 0
    both = (tmp_path / "LEADERBOARD.md").read_text()
    mine, ref = both.split("# Reference results (the suite's, not yours)")
    assert mine.startswith(board) and "[R1]" in ref and "[S1]" not in ref and "](reference-" in ref
    assert "\n## " not in ref and "\n### Table 4" in ref and "\n### Sources" in ref  # one level down


def test_a_figure_with_nothing_to_show_says_why(tmp_path):
    recs = write_all(tmp_path, [record("listops", "softmax", acc=30.0), record("listops", "pola-a3", acc=31.0)])
    report = build_report(recs)
    assert "Not drawn: no `lra bench` record on any machine" in report.markdown
    recs = write_all(tmp_path, [record("listops", "pola-a3", kind="bench", train_tp=5.0, mem=10.0)])
    report = build_report(recs)
    assert "ListOps (pola-a3, softmax): no softmax bench on Test CPU" in report.markdown
    from lra.report.figures import COLOURS, nothing_to_show, styles

    assert len(set(styles([f"a{i}" for i in range(len(COLOURS))]).values())) == len(COLOURS)
    assert len({c for c, _ in styles([f"a{i}" for i in range(len(COLOURS))]).values()}) == len(COLOURS)
    assert len(set(styles([f"a{i}" for i in range(40)]).values())) == 40
    nothing_to_show(tmp_path / "empty.png", "Accuracy against throughput", "no bench records")
    assert (tmp_path / "empty.png").read_bytes()[:4] == b"\x89PNG"
def analysis(task, attention, *, seed=0, maps=None, status="ok", error=None, figure=None, beside=None):
    """An `lra analyze` record: per map [layer][head] entropy and rank, as lra/analyze.py writes it."""
    rec = record(task, attention, seed=seed, status=status)
    rec["kind"], rec["run_id"] = "analysis", "analysis-" + rec["run_id"]
    maps = maps or {}
    rec["metrics"] = {"best_val_accuracy": 40.0 + seed, "maps": {
        name: {"entropy": e, "effective_rank": k, "entropy_mean": sum(map(sum, e)) / sum(map(len, e)),
               "effective_rank_mean": sum(map(sum, k)) / sum(map(len, k))} for name, (e, k) in maps.items()}}
    rec["analysis"] = {"source_run": f"train-{attention}-{seed}", "checkpoint_step": 150, "split": "val", "inputs": 4,
                       "max_len": None, "lengths": [100, 200], "uniform_entropy": 5.0, "figure": figure,
                       "beside": beside}
    if error:
        rec["error"] = error
    return rec


def test_diagnostics_table_means_over_heads_layers_and_seeds_with_sources_and_figures(tmp_path):
    e = lambda *v: [list(v[:2]), list(v[2:])]  # two layers x two heads
    recs = write_all(tmp_path, [
        analysis("listops", "pola-a3", maps={"same-sign": (e(1, 2, 3, 4), e(10, 10, 20, 20)),
                                             "opposite-sign": (e(2, 2, 2, 2), e(5, 5, 5, 5))},
                 figure="analysis/p.png", beside={"attention": "softmax", "source_run": "s"}),
        analysis("listops", "linear", seed=0, maps={"attention": (e(4, 4, 4, 4), e(3, 3, 3, 3))}),
        analysis("listops", "linear", seed=1, maps={"attention": (e(6, 6, 6, 6), e(5, 5, 5, 5))}),
        analysis("listops", "linear", seed=1, maps={"attention": (e(5, 5, 5, 5), e(4, 4, 4, 4))}),  # latest of seed 1
        analysis("listops", "softmax", status="failed", error="no map: not a map of v"),
    ])
    md = build_report(recs).markdown
    diag = md[md.index("## Diagnostics"):md.index("## Ablations")]
    assert "### ListOps, smoke preset" in diag
    row = lambda label, name: split(next(l for l in diag.splitlines() if l.startswith(f"| {label} ") and f"| {name} " in l))
    same = row("pola-a3", "same-sign")
    assert same[2].startswith("2.500 [S") and same[3] == "1.50 / 3.50" and same[4] == "5.00"
    assert same[5] == "15.0" and same[6] == "10.0 / 20.0" and same[7] == "40.00" and same[8] == "1"
    assert row("pola-a3", "opposite-sign")[2].startswith("2.000 [S")
    linear = row("linear", "attention")
    assert linear[2].startswith("4.500 [S") and linear[5] == "3.5" and linear[8] == "2"  # seeds 0 and 1 (latest)
    assert "no map: not a map of v" in split(next(l for l in diag.splitlines() if l.startswith("| softmax ")))[2]
    assert "[pola-a3, seed 0, beside softmax](analysis/p.png)" in diag
    ref = re.search(r"\[(S\d+)\]", linear[2]).group(1)
    assert "train-linear-1" in sources(md)[ref] and "step 150" in sources(md)[ref]
    assert "Not analysed here:" in diag and "performer" in diag.split("Not analysed here:")[1]


def test_ablation_table_groups_variants_under_their_attention_beside_the_published_ones(tmp_path):
    opts = lambda **o: {**attentions.options_dict(attentions.resolve("pola-a3")), **o}
    recs = write_all(tmp_path, [
        record("listops", "pola-a3", seed=0, acc=30.0), record("listops", "pola-a3", seed=1, acc=32.0),
        record("listops", "pola-a3", options=opts(gate_init="zeros"), acc=20.0),
        record("listops", "pola-a3", options=opts(gate=False, dwc=False), acc=25.0),
        record("listops", "pola-a3", options=opts(polarity=False), status="diverged"),
        record("listops", "pola-a3", options=opts(alpha=5.0), acc=33.0),  # that is pola-a5: not a variant
        record("listops", "softmax", acc=21.0),
    ])
    md = build_report(recs).markdown
    abl = md[md.index("## Ablations"):md.index("## Sources")]
    assert "### pola-a3 on ListOps, smoke preset" in abl and abl.count("###") == 1
    rows = {split(l)[0]: split(l) for l in abl.splitlines() if l.startswith("| ") and not l.startswith("| variant")}
    assert rows["baseline (defaults)"][2].startswith("31.00 ± 1.41 (n=2) [S")
    assert rows["baseline (defaults)"][3:] == ["73.06 (Text)", "Appendix A.4: LRA Text (alpha 3)"]
    assert rows["gate_init=zeros"][1] == "zeros" and rows["gate_init=zeros"][2].startswith("20.00 (n=1) [S")
    assert rows["gate_init=zeros"][3] == "72.17 (Text)"
    assert rows["dwc=False, gate=False"][1:4:2] == ["-", "-"]  # ours only
    assert rows["polarity=False"][2].startswith("1 diverged") and rows["polarity=False"][3] == "no LRA number"
    assert rows["polarity=False"][4] == "Table 3: ImageNet-1K only"
    assert rows["gate_init=uniform"][2] == "no run" and rows["gate_init=uniform"][3] == "74.40 (Text)"
    assert "alpha=5" not in abl and list(rows)[0] == "baseline (defaults)"
    t4 = md[md.index("## Table 4"):md.index("## Table 6")]
    assert "gate_init" not in t4 and "polarity=" not in t4  # variants are the ablation's rows only
    assert cell(t4, "| pola-a5", "ListOps").startswith("**33.00")  # the best of the column


def test_parameter_counts_are_shown_in_table4_and_table6(tmp_path):
    """Methods whose size grows with the length (linformer's E, the position table) show it: Table 4
    gives the range of each row's runs over the tasks, Table 6 a P row per task."""
    runs = [record("listops", "softmax", acc=30.0), record("text", "softmax", acc=60.0),
            record("listops", "softmax", kind="bench", train_tp=100.0, mem=400.0)]
    runs[0]["num_params"], runs[1]["num_params"], runs[2]["num_params"] = 218_000, 1_250_000, 218_000
    md = build_report(write_all(tmp_path, runs)).markdown
    t4 = md[md.index("## Table 4"):md.index("## Table 6")]
    assert cell(t4, "| softmax", "params") == "218k-1.25M"
    t6 = md[md.index("## Table 6"):md.index("### Every bench record")]
    listops = t6[t6.index("| ListOps"):].splitlines()
    p_row = next(line for line in listops if split(line)[1:3] == ["P", "ours"])
    assert "218k" in split(p_row)
