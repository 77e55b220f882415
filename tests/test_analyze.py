"""`lra analyze` and the statistics behind it (lra/diagnostics.py): entropy and effective rank on
hand-made maps, then trained runs found by their identity, analysed, drawn beside softmax, and an
attention without a map reported as such."""

import json
import math
from pathlib import Path

import pytest
import torch

import attentions
from attentions import AttentionBase
from lra import train
from lra.cli import main
from lra.core.presets import make_config
from lra.core.records import read_records
from lra.diagnostics import effective_rank, real_block, row_entropy


def test_entropy_and_effective_rank_on_known_maps():
    n = 6
    uniform = torch.full((n, n), 1 / n, dtype=torch.float64)
    assert row_entropy(uniform) == pytest.approx(math.log(n))
    assert effective_rank(uniform) == pytest.approx(1.0)  # rank one
    eye = torch.eye(n, dtype=torch.float64)
    assert row_entropy(eye) == 0.0 and effective_rank(eye) == pytest.approx(n)
    # rows [1/2, 1/2, 0] and [1, 0, 0] and [1/4, 1/4, 1/2]: entropies ln 2, 0, 1.5 ln 2
    a = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.25, 0.25, 0.5]], dtype=torch.float64)
    assert row_entropy(a) == pytest.approx((math.log(2) + 1.5 * math.log(2)) / 3)
    s = torch.linalg.svdvals(a)
    q = s / s.sum()
    assert effective_rank(a) == pytest.approx(math.exp(-(q * q.log()).sum().item()))
    # an unnormalised or signed row is read as |A| renormalised: the same entropy as the normalised map
    assert row_entropy(torch.tensor([[2.0, -2.0]])) == pytest.approx(math.log(2))
    assert row_entropy(3 * a) == pytest.approx(row_entropy(a))


def test_statistics_use_real_tokens_only_wherever_they_are():
    a = torch.arange(25, dtype=torch.float32).view(5, 5)
    mask = torch.tensor([True, False, True, True, False])
    block = real_block(a, mask)
    assert block.dtype == torch.float64 and block.tolist() == [[0, 2, 3], [10, 12, 13], [15, 17, 18]]


def tiny(listops_dir, results, attention, **options):
    cfg = make_config("listops", "smoke", data_dir=str(listops_dir), results_dir=str(results), attention=attention)
    cfg.attention_options = options
    cfg.data.subdir, cfg.data.generate, cfg.data.seq_len = "", False, 64
    t = cfg.train
    t.steps, t.batch_size, t.warmup, t.eval_every, t.timing_warmup = 4, 8, 1, 2, 1
    return cfg


@pytest.fixture(scope="module")
def trained(listops_dir, tmp_path_factory):
    """Tiny trained runs of pola-a3 and softmax, with their best-dev checkpoints."""
    results = tmp_path_factory.mktemp("results")
    records = {name: train.run(tiny(listops_dir, results, name), checkpoint_every=2, progress=False)
               for name in ("pola-a3", "softmax")}
    return results, records


def analyze(listops_dir, results, *argv):
    return main(["analyze", *argv, "--data-dir", str(listops_dir), "--results-dir", str(results), "--inputs", "3",
                 "--max-len", "48"])


def test_analyze_writes_per_layer_and_head_values_and_the_maps_beside_softmax(listops_dir, trained, capsys):
    results, records = trained
    assert analyze(listops_dir, results, "--task", "listops", "--attention", "pola-a3", "--seeds", "0") == 0
    assert "entropy" in capsys.readouterr().out
    rec, = [r for r in read_records(results) if r["kind"] == "analysis"]
    m, info = rec["metrics"], rec["analysis"]
    assert rec["status"] == "ok" and rec["attention"] == "pola-a3" and info["source_run"] == records["pola-a3"]["run_id"]
    assert list(m["maps"]) == ["same-sign", "opposite-sign"]
    for v in m["maps"].values():
        assert len(v["entropy"]) == 2 and all(len(row) == 2 for row in v["entropy"])  # 2 layers x 2 heads
        assert all(1 <= r <= 48 for row in v["effective_rank"] for r in row)
        assert v["entropy_mean"] == pytest.approx(sum(sum(row) for row in v["entropy"]) / 4)
    assert 0 < m["entropy"] < info["uniform_entropy"] <= math.log(48)
    assert len(info["lengths"]) == 3 and max(info["lengths"]) <= 48
    assert m["best_val_accuracy"] == records["pola-a3"]["metrics"]["best_val_accuracy"]
    assert info["beside"] == {"attention": "softmax", "source_run": records["softmax"]["run_id"]}
    png = results / info["figure"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analyze_by_record_or_run_id_and_the_same_inputs_give_the_same_values(listops_dir, trained):
    results, records = trained
    path = records["softmax"]["path"]
    assert analyze(listops_dir, results, path, "--no-figure") == 0
    assert analyze(listops_dir, results, records["softmax"]["run_id"], "--no-figure") == 0
    a, b = [r for r in read_records(results) if r["kind"] == "analysis" and r["attention"] == "softmax"]
    assert a["metrics"]["maps"] == b["metrics"]["maps"] and list(a["metrics"]["maps"]) == ["attention"]
    assert a["analysis"]["figure"] is None


def test_missing_checkpoint_and_an_attention_without_a_map(listops_dir, trained, tmp_path, capsys):
    results, _ = trained
    assert analyze(listops_dir, results, "--attention", "linear") == 1
    assert "no checkpoint" in capsys.readouterr().err

    @attentions.register("toy-nomap")
    class NoMap(AttentionBase):
        """Squares v: not linear in v, so no map."""

        maps_from_core = False

        def core(self, q, k, v, mask):
            return v * v

    try:
        train.run(tiny(Path(listops_dir), tmp_path, "toy-nomap"), checkpoint_every=2, progress=False)
        assert analyze(listops_dir, tmp_path, "--attention", "toy-nomap") == 1
        assert "no map" in capsys.readouterr().out
        rec, = [r for r in read_records(tmp_path) if r["kind"] == "analysis"]
        assert rec["status"] == "failed" and rec["error"].startswith("no map")
        json.dumps(rec)  # the record is plain JSON
    finally:
        attentions.unregister("toy-nomap")
