"""The tables a run ends with: a latency too small to show what pruning saves
(overhead-bound) is marked as such, with where to measure instead."""
import pytest

from slim_callbacks.app.report import summary_table
from slim_callbacks.latency.measure import (
    OVERHEAD_BOUND_MACS,
    OVERHEAD_BOUND_MS,
    Latency,
    format_latency_table,
)

QUICKSTART_MACS, MOBILENET_224_MACS = 834_688, 568_740_352


def entry(threads, before_ms, after_ms):
    return {"threads": threads, "samples": 100, "before_ms": before_ms, "after_ms": after_ms,
            "before_p25_ms": before_ms, "before_p75_ms": before_ms, "after_p25_ms": after_ms,
            "after_p75_ms": after_ms, "speedup": before_ms / after_ms}


def summary(latency, macs=MOBILENET_224_MACS):
    side = {"acc": 0.9, "macs": macs, "gflops": 0.0, "params": 10, "size_mb": 0.1}
    return {"before": side, "after": {**side, "macs": macs // 2}, "flops_reduction": 0.5,
            "latency": latency}


def test_a_latency_under_the_bound_is_marked_with_where_to_measure():
    text = summary_table(summary({"1_thread": entry(1, 0.903, 0.844),
                                  "all_cores": entry(2, 0.95, 1.01)}, QUICKSTART_MACS))
    assert "latency speedup: 1.07x (1 thread), 0.94x (2 threads)" in text
    note = " ".join(text[text.index("overhead-bound latency"):].split())
    assert note.startswith("overhead-bound latency: the original (0.8 M MACs) runs in 0.903 ms "
                           f"(1 thread), 0.950 ms (2 threads). Under {OVERHEAD_BOUND_MACS / 1e6:g} M "
                           f"MACs or {OVERHEAD_BOUND_MS:g} ms a run")
    assert "-o data.image_size=224" in note and "slim-callbacks latency" in note


def test_a_tiny_model_timed_slowly_under_load_is_marked_by_its_macs():
    text = summary_table(summary({"1_thread": entry(1, 2.613, 2.317)}, QUICKSTART_MACS))
    assert "overhead-bound latency" in text
    assert "overhead-bound" not in summary_table(summary({"1_thread": entry(1, 2.613, 2.317)}))


@pytest.mark.parametrize("latency", [{"1_thread": entry(1, 7.24, 4.24)}, None])
def test_a_real_latency_or_none_gets_no_mark(latency):
    assert "overhead-bound" not in summary_table(summary(latency))


def test_the_latency_command_marks_it_too():
    def latency(name, ms):
        return Latency(name, name, ms, ms, ms, ms, ms, 100, 1, True)
    assert "overhead-bound" in format_latency_table([latency("original", 0.9),
                                                    latency("pruned", 0.8)])
    assert "overhead-bound" not in format_latency_table([latency("original", 7.2),
                                                        latency("pruned", 4.2)])
