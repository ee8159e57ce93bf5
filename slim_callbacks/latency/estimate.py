"""How much a recipe will measure on this machine before it starts: ``strategy: latency``
and ``round_to: auto`` time layers and whole networks in Paddle Inference, minutes on
a first call and nothing once their timings are cached.

:func:`estimate_measuring` counts the timings the latency cache lacks - the latency
model's per-layer grid, the calibration copies, ``round_to: auto``'s layer probes -
and the whole-network timings (the unpruned network, the search's tries: counted
only when the calibration is not cached either, since a rerun finds them cached; the
multiples of the ``round_to: auto`` check, at its representative uniform cut), and prices them with rough
per-timing costs measured on a 2-core machine (:data:`SPEC_S`, :data:`EXPORT_S`,
:data:`MACS_PER_S`). The result is an estimate to print, not a promise.

Examples:
    >>> import paddle, tempfile
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(),
    ...                            paddle.nn.Conv2D(8, 4, 1))
    >>> est = estimate_measuring(net, [1, 3, 16, 16], latency=True,
    ...                          options={"cache_dir": tempfile.mkdtemp()})
    >>> est.layers > 0 and est.networks > 0 and est.seconds > 0
    True
    >>> est.line("strategy: latency").startswith("strategy: latency measures on this machine")
    True
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence

import paddle

from slim_callbacks.analysis.flops import count_flops
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.latency.auto_round import block_specs, candidate_networks, probe_groups, probe_widths
from slim_callbacks.latency.model import GRID, LatencyModel
from slim_callbacks.latency.table import LatencyTable

SPEC_S = 0.15       # one layer exported and timed alone (0.12-0.16 s measured here)
EXPORT_S = 0.7      # one MobileNetV1-224 exported for a whole-network timing
MACS_PER_S = 5e10   # batch-1 MACs per second, 1 thread, oneDNN (MobileNetV1-224: ~10 ms)
RUNS = 55           # runs per whole-network timing (LatencyTable: warm-up 5 + 10 x 5)
CALIBRATION_BATCH = 6  # copies per side-by-side calibration timing (each adds a baseline)


@dataclass
class Estimate:
    """Timings the cache lacks (``layers`` of ``layers_total``; whole ``networks``),
    the seconds they would take, and the cache files."""
    layers: int = 0
    layers_total: int = 0
    networks: int = 0
    seconds: float = 0.0
    paths: List[str] = field(default_factory=list)

    def line(self, what: str) -> str:
        """One line saying what will be measured and about how long it takes."""
        where = ", ".join(dict.fromkeys(self.paths))
        if not self.layers and not self.networks:
            return f"{what}: every latency timing it needs is in the cache ({where}); nothing to measure"
        minutes = self.seconds / 60
        took = f"about {minutes:.0f} min" if minutes >= 1.5 else f"about {self.seconds:.0f} s"
        return (f"{what} measures on this machine first: {self.layers} of {self.layers_total} "
                f"layer timings and {self.networks} whole-network timings are not cached "
                f"({where}), {took} (rough estimate; --no-measure skips measuring)")


def _network_s(macs: float, count: int, runs: int = RUNS) -> float:
    return count * (EXPORT_S + runs * macs / MACS_PER_S)


def _add_layers(est: Estimate, table: LatencyTable, specs) -> None:
    keys = {s.key for s in specs}
    missing = len([k for k in keys if k not in table.entries])
    est.layers += missing
    est.layers_total += len(keys)
    est.seconds += missing * SPEC_S
    est.paths.append(table.path)


def estimate_measuring(network: paddle.nn.Layer, input_shape: Sequence[int], *,
                       latency: bool = False, round_auto: bool = False,
                       layers: Optional[List[str]] = None, skip: Sequence[str] = (),
                       round_to: int = 1, options: Optional[Mapping] = None,
                       graph=None) -> Estimate:
    """What ``strategy: latency`` (``latency``; its ``options`` as
    ``pruning.strategy_options`` holds them) and ``round_to: auto`` (``round_auto``;
    1 thread, oneDNN, in ``options["cache_dir"]`` if given) would measure; nothing is
    timed. ``graph``: the network's trace if the caller has one (not traced again)."""
    options = dict(options or {})
    shape = as_inputs(input_shape)
    est = Estimate()
    macs = count_flops(network, shape)
    if round_auto:
        table = LatencyTable(directory=options.get("cache_dir"))
        model = LatencyModel(network, shape, table, layers, skip, graph=graph, measure=False)
        specs = [s for g in probe_groups(model) for s in block_specs(model, g, probe_widths(model, g))]
        _add_layers(est, table, specs)
        found = candidate_networks(network, shape, skip=skip, graph=model.graph)
        if any(f"network {name}" not in table.entries for name in found.factories):
            est.networks += len(found.factories)    # one missing: all are timed again
            est.seconds += _network_s(macs * 0.5, len(found.factories))
        round_to = 1 if round_to == "auto" else round_to
    if latency:
        table = LatencyTable(threads=int(options.get("threads", 1)),
                             onednn=bool(options.get("onednn", True)),
                             directory=options.get("cache_dir"),
                             keep_intermediates=bool(options.get("keep_intermediates", False)))
        model = LatencyModel(network, shape, table, layers, skip, graph=graph, measure=False,
                             round_to=round_to)
        _add_layers(est, table, model.grid_specs(tuple(options.get("grid", GRID))))
        if f"network {model.base_key}" not in table.entries:
            est.networks += 1
            est.seconds += _network_s(macs, 1)
        copies = [w for w in model.calibration_widths(round_to).values()
                  if model.ratio_key(w, round_to) not in table.entries]
        batches = -(-len(copies) // CALIBRATION_BATCH)
        tries = (int(options.get("feedback", 5)) + 1) if copies else 0
        est.networks += len(copies) + batches + 2 * tries
        est.seconds += _network_s(macs * 0.6, len(copies)) + _network_s(macs, batches)
        est.seconds += _network_s(macs * 0.8, 2 * tries, 2 * RUNS)
    return est
