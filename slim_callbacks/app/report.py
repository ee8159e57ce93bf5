"""What the commands print and draw: text tables of a run's summary and of a plan, and
the sensitivity curves (VisualDL charts and a PNG).

Examples:
    >>> print(table([("params", "1,000", "500")], ("", "before", "after")))
            before  after
    ------  ------  -----
    params   1,000    500
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import paddle

from slim_callbacks.analysis.flops import profile


def summary_table(summary: Dict[str, Any]) -> str:
    """The before/after table that ``slim-callbacks run`` ends with."""
    b, a = summary["before"], summary["after"]
    rows = [("top-1 accuracy", f"{b['acc']:.4f}", f"{a['acc']:.4f}")]
    if "acc_top5" in b:
        rows.append(("top-5 accuracy", f"{b['acc_top5']:.4f}", f"{a['acc_top5']:.4f}"))
    rows += [("MACs", f"{b['macs']:,}", f"{a['macs']:,}"),
             ("GFLOPs (2 x MACs)", f"{b['gflops']:.3f}", f"{a['gflops']:.3f}"),
             ("params", f"{b['params']:,}", f"{a['params']:,}"),
             ("size MB (float32)", f"{b['size_mb']:.1f}", f"{a['size_mb']:.1f}")]
    rows += latency_rows(summary.get("latency"))
    text = table(rows, ("", "before", "after")) + \
        f"\nFLOPs reduction: {summary['flops_reduction']:.2%}"
    speedups = latency_speedups(summary.get("latency"))
    text += f"\nlatency speedup: {speedups}" if speedups else ""
    return text + overhead_note(summary.get("latency"), b.get("macs")) + \
        latency_strategy_line(summary.get("latency_strategy"))


def overhead_note(latency, macs: Optional[int] = None) -> str:
    """Lines saying that the latencies are overhead-bound (``overhead_bound``, one rule for
    every table) and where to measure instead; empty otherwise.

        >>> print(overhead_note({"1_thread": {"threads": 1, "before_ms": 0.9}}, macs=834_688))
        <BLANKLINE>
        overhead-bound latency: the original (0.8 M MACs) runs in 0.900 ms (1 thread).
          Under 100 M MACs or 2 ms a run, the time is mostly Paddle's fixed per-op cost, not
          arithmetic, so the speedup says little about pruning. For a real measurement run the
          recipe at the input size you deploy (e.g. -o data.image_size=224), or time models
          exported at that size with slim-callbacks latency.
    """
    from slim_callbacks.latency.measure import OVERHEAD_BOUND_MACS, OVERHEAD_BOUND_MS, overhead_bound
    entries = [e for e in ((latency or {}).get(s) for s in ("1_thread", "all_cores")) if e]
    if not any(overhead_bound(entry["before_ms"], macs) for entry in entries):
        return ""
    times = ", ".join(f"{entry['before_ms']:.3f} ms ({_threads(entry)})" for entry in entries)
    size = f" ({macs / 1e6:.1f} M MACs)" if macs is not None else ""
    return (f"\noverhead-bound latency: the original{size} runs in {times}.\n"
            f"  Under {OVERHEAD_BOUND_MACS / 1e6:g} M MACs or {OVERHEAD_BOUND_MS:g} ms a run, the "
            "time is mostly Paddle's fixed per-op cost, not\n"
            "  arithmetic, so the speedup says little about pruning. For a real measurement run the\n"
            "  recipe at the input size you deploy (e.g. -o data.image_size=224), or time models\n"
            "  exported at that size with slim-callbacks latency.")


def latency_strategy_line(entry) -> str:
    """The latency strategy's target, prediction and measurement, or nothing.

        >>> latency_strategy_line({"target_reduction": 0.5, "predicted_reduction": 0.49,
        ...     "measured_reduction": 0.47, "threads": 1})
        '\\nlatency strategy (1 thread): target -50.00%, predicted -49.00%, measured -47.00%'
    """
    if not entry:
        return ""
    measured = entry.get("measured_reduction")
    shown = "not measured" if measured is None else f"-{measured:.2%}"
    keeps = [bool(entry.get(k)) for k in ("keep_intermediates", "measured_keep_intermediates")]
    if measured is not None and keeps[0] != keeps[1]:
        shown += (" (keeping intermediates; predicted for freeing them)" if keeps[1]
                  else " (freeing intermediates; predicted for keeping them)")
    return (f"\nlatency strategy ({_threads(entry)}): target -{entry['target_reduction']:.2%}, "
            f"predicted -{entry['predicted_reduction']:.2%}, measured {shown}")


def _threads(entry) -> str:
    return f"{entry['threads']} thread{'s' if entry['threads'] != 1 else ''}"


def latency_rows(latency) -> list:
    """Table rows of batch-1 latency (median ms, p25-p75) per thread setting.

    Examples:
        >>> latency_rows({"1_thread": {"threads": 1, "before_ms": 2.0, "after_ms": 1.0,
        ...     "before_p25_ms": 1.9, "before_p75_ms": 2.1, "after_p25_ms": 0.9,
        ...     "after_p75_ms": 1.1, "speedup": 2.0}})
        [('latency ms, 1 thread', '2.000 (1.900-2.100)', '1.000 (0.900-1.100)')]
    """
    rows = []
    for setting in ("1_thread", "all_cores"):
        entry = (latency or {}).get(setting)
        if entry:
            rows.append((f"latency ms, {_threads(entry)}",
                         f"{entry['before_ms']:.3f} ({entry['before_p25_ms']:.3f}-"
                         f"{entry['before_p75_ms']:.3f})",
                         f"{entry['after_ms']:.3f} ({entry['after_p25_ms']:.3f}-"
                         f"{entry['after_p75_ms']:.3f})"))
    return rows


def latency_speedups(latency) -> str:
    """``"1.80x (1 thread), 1.60x (2 threads)"``; empty without latency numbers."""
    return ", ".join(f"{entry['speedup']:.2f}x ({_threads(entry)})"
                     for entry in ((latency or {}).get(s) for s in ("1_thread", "all_cores"))
                     if entry)


def table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plan_text(result: Dict[str, Any]) -> str:
    b, a = result["before"], result["after"]

    def change(key):
        return f"{(a[key] - b[key]) / b[key]:+.2%}" if b[key] else ""
    rows = [("MACs", f"{b['macs']:,}", f"{a['macs']:,}", change("macs")),
            ("GFLOPs (2 x MACs)", f"{b['gflops']:.3f}", f"{a['gflops']:.3f}", change("gflops")),
            ("GFLOPs (PaddleSlim legacy)", f"{b['gflops_legacy']:.3f}", f"{a['gflops_legacy']:.3f}",
             change("gflops_legacy")),
            ("params", f"{b['params']:,}", f"{a['params']:,}", change("params")),
            ("size MB (float32)", f"{b['size_mb']:.1f}", f"{a['size_mb']:.1f}", change("size_mb"))]
    text = [table(rows, ("", "before", "after", "change"))]
    pruned = [(n, str(w0), str(w1)) for n, (w0, w1) in result["layers"].items() if w0 != w1]
    text.append(f"\nratios: {result['ratios']}")
    text.append(f"{len(pruned)} of {len(result['layers'])} conv/linear layers change width:")
    text.append(table(pruned, ("layer", "before", "after")) if pruned else "(none)")
    for entry in result.get("approximate", []):
        text.append(f"approximate: group {entry['group']}: {entry['reason']}")
    return "\n".join(text)


def write_curves(result: Dict[str, Dict[float, float]], log_dir: str) -> None:
    """One VisualDL scalar chart per layer, ``sensitivity/<layer>``, step = ratio in %."""
    from visualdl import LogWriter
    with LogWriter(logdir=log_dir) as writer:
        for name, losses in result.items():
            for ratio, loss in sorted(losses.items()):
                writer.add_scalar(f"sensitivity/{name}", value=float(loss),
                                  step=int(round(ratio * 100)))


def plot_curves(result: Dict[str, Dict[float, float]], png: str) -> bool:
    """All layers' loss-vs-ratio curves in one PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, losses in result.items():
        points = sorted(losses.items())
        ax.plot([r for r, _ in points], [l for _, l in points], marker="o", label=name)
    ax.set_xlabel("pruned ratio")
    ax.set_ylabel("relative accuracy loss")
    ax.legend(fontsize=6)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True


SUMMARY_KEYS = ("acc", "macs", "gflops", "params", "size_mb")


def structure(network: paddle.nn.Layer, example_inputs, keys=SUMMARY_KEYS) -> Dict[str, Any]:
    """The ``keys`` of :func:`~slim_callbacks.analysis.flops.profile` for the tables."""
    numbers = profile(network, example_inputs)
    return {k: numbers[k] for k in keys if k in numbers}
