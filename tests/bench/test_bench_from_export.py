"""benchmarks/bench_from_export.py: its table and summary, and one model end to end (slow)."""
import sys

import pytest
from helpers import BENCHMARKS

sys.path.insert(0, BENCHMARKS)
import bench_from_export  # noqa: E402

ROW = {"model": "m1", "family": "F", "input": 32, "status": "ok", "ops": 10,
       "rebuilt_exact": True, "rebuilt_diff": 0.0, "same_widths": True, "pruned_diff": 0.0,
       "macs_cut": 0.5, "export_verified": True, "rebuild_s": 1.0, "prune_s": 0.5}


def test_a_family_passes_a_column_only_if_every_model_does():
    rows = [ROW, {**ROW, "model": "m2", "same_widths": False},
            {"model": "g1", "family": "G", "input": 32, "status": "timeout", "error": "over 9 s"}]
    summary = bench_from_export.summary(rows)
    assert summary["rebuilt_exact"] == {"models": 2, "families": 1}
    assert summary["same_widths"] == {"models": 1, "families": 0}
    assert summary["failed"] == [("g1", "over 9 s")]
    table = bench_from_export.format_table(rows).splitlines()
    assert len(table) == 5 and "| NO (0.0e+00) |" in table[3] and "timeout: over 9 s" in table[4]


@pytest.mark.slow
def test_mobilenet_v3_small_rebuilds_prunes_like_python_and_exports():
    row = bench_from_export.measure_one("mobilenet_v3_small", 0.3)
    assert row["rebuilt_exact"] and row["same_widths"] and row["export_verified"]
    assert row["macs_cut"] > 0.2
