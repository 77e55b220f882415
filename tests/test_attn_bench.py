"""The attention micro-benchmark: each cell measured in its own process; out-of-memory is a
recorded status (and stops the larger N of that attention), not a crash."""

import json

import pytest

from lra import attn_bench


def test_rows_and_table():
    rows = attn_bench.bench_rows(["linear"], [64, 256], batch=1, heads=2, head_dim=8, min_time=0.0, min_iters=1,
                                 max_iters=1, timeout=120)
    assert [r["n"] for r in rows] == [64, 256]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["ms"] > 0 and r["peak_mb"] is not None and r["memory_method"].startswith("cpu_rss_high_water_mark")
        assert r["iters"] == 1 and r["ms_min"] <= r["ms"] and r["batch"] == 1 and r["head_dim"] == 8
    table = attn_bench.format_table(rows)
    assert "linear" in table and "N=256: ms / MiB" in table and "O(N d^2)" in table
    json.dumps(rows)  # rows are plain data for other tools


def test_out_of_memory_is_recorded_and_larger_n_skipped():
    rows = attn_bench.bench_rows(["softmax"], [4096, 8192], batch=8, min_time=0.0, min_iters=1, max_iters=1,
                                 timeout=120, memory_limit_gb=2.5)
    assert [r["status"] for r in rows] == ["oom", "skipped"]
    assert "allocate" in rows[0]["error"] and rows[1]["error"] == "oom at N=4096"
    assert "oom" in attn_bench.format_table(rows)


def test_unknown_attention_fails_before_any_work():
    with pytest.raises(ValueError, match="Valid attentions"):
        attn_bench.bench_rows(["sofmax"], [64])


def test_cli_json_to_stdout(capsys):
    assert attn_bench.main(["--attention", "cosformer", "--n", "32", "--batch", "1", "--min-time", "0",
                            "--min-iters", "1", "--max-iters", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["env"]["device"] == "cpu" and out["rows"][0]["attention"] == "cosformer"
