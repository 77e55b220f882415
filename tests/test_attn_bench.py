"""The attention micro-benchmark: each cell measured in its own process; out-of-memory is a
recorded status (and stops the larger N of that attention), not a crash."""

import json

import pytest

from lra import attn_bench


def test_rows_from_worker_processes():
    rows = attn_bench.bench_rows(["linear"], [64], batch=1, heads=2, head_dim=8, min_time=0.0, min_iters=1,
                                 max_iters=1, timeout=120)
    assert len(rows) == 1
    r = rows[0]
    assert r["status"] == "ok", r
    assert r["ms"] > 0 and r["ms_min"] <= r["ms"] and r["iters"] == 1
    assert r["peak_mb"] is not None and r["memory_method"].startswith("cpu_rss_high_water_mark")
    assert (r["n"], r["batch"], r["heads"], r["head_dim"]) == (64, 1, 2, 8)
    json.dumps(rows)  # rows are plain data for other tools


def test_table_cells_and_growth_columns():
    def row(name, n, ms, mb, status="ok"):
        return {"attention": name, "n": n, "status": status, "ms": ms, "ms_min": ms and ms / 2, "peak_mb": mb}

    rows = [row("softmax", 1024, 10, 5), row("softmax", 2048, 40, 20), row("softmax", 8192, 640, 320),
            row("linear", 1024, 1, 1), row("linear", 2048, 2, 2), row("linear", 8192, 8, 8),
            row("pola", 2048, 3, 3), row("pola", 8192, None, None, "oom")]
    table = attn_bench.format_table(rows)
    lines = {line.split()[0]: line for line in table.splitlines()[2:]}
    assert "N=1024: ms / MiB" in table and "time x (2048->8192)" in table and "mem x (2048->8192)" in table
    assert "640.0 / 320" in lines["softmax"] and lines["softmax"].split()[-2:] == ["16.0", "16.0"]
    assert lines["linear"].split()[-2:] == ["4.0", "4.0"] and "O(N d^2)" in lines["linear"]
    assert "oom" in lines["pola"] and lines["pola"].split()[-2:] == ["-", "-"]
    assert "320.0 / 320" in attn_bench.format_table(rows, stat="min")


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
