"""Latency of exported inference models on CPU, measured side by side.

Each model gets one predictor and a batch-1 random input of its input shape. After a
warm-up, the models are timed in interleaved rounds (each round times every model, the
order rotated one step per round), so a slow spell on a shared machine falls on all
models alike rather than on whichever ran last.

Examples:
    >>> import paddle, tempfile, os
    >>> from slim_callbacks.deploy.runtime import save_inference_model
    >>> d = tempfile.mkdtemp()
    >>> for name, width in (("wide", 64), ("narrow", 8)):
    ...     save_inference_model(paddle.nn.Linear(16, width), os.path.join(d, name), [1, 16])
    >>> res = measure_latency({n: os.path.join(d, n) for n in ("wide", "narrow")},
    ...                       warmup=1, rounds=2, runs_per_round=1)
    >>> [r.name for r in res], all(r.median_ms > 0 for r in res)
    (['wide', 'narrow'], True)
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence, Union

import numpy as np

from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.deploy.runtime import check_threads, input_dtypes, input_shapes, predictor, run

_clock = time.perf_counter  # tests replace this with a fake timer


@dataclass
class Latency:
    """One model's latency in milliseconds per run (of a batch of ``batch``, 1 by default)."""
    name: str
    prefix: str
    median_ms: float
    p25_ms: float
    p75_ms: float
    min_ms: float
    max_ms: float
    samples: int
    threads: int
    onednn: bool
    batch: int = 1


#: A batch-1 run under this many ms, or of a model under this many MACs, is mostly
#: Paddle's fixed per-op cost, not arithmetic: pruning cannot show there. Measured on the
#: project's machine (BENCHMARKS.md, "Latency of tiny models is framework overhead"):
#: MobileNetV1's run holds 0.9-1.3 ms outside the kernels, and its kernels do about 82
#: MACs per ns, so below 100 M MACs the arithmetic takes no longer than the fixed part.
OVERHEAD_BOUND_MS = 2.0
OVERHEAD_BOUND_MACS = 100_000_000


def overhead_bound(median_ms: float, macs: Optional[int] = None) -> bool:
    """True when a latency says little about the model's arithmetic (the rule above).

    Examples:
        >>> overhead_bound(0.9), overhead_bound(2.6, macs=834_688), overhead_bound(7.2, 568_740_352)
        (True, True, False)
    """
    return median_ms < OVERHEAD_BOUND_MS or (macs is not None and macs < OVERHEAD_BOUND_MACS)


def _random_inputs(pred, name: str, input_shape, rng) -> List[np.ndarray]:
    """An input for every input of ``pred`` (batch 1 unless ``input_shape`` gives the
    first one): normal noise for floats, zeros else."""
    shapes = input_shapes(pred, name, input_shape, batch=1)
    return [rng.standard_normal(shape).astype(dtype) if np.dtype(dtype).kind == "f"
            else np.zeros(shape, dtype=dtype) for shape, dtype in zip(shapes, input_dtypes(pred, name))]


def _keeping(names: List[str], keep_intermediates) -> Dict[str, bool]:
    """``keep_intermediates`` (a bool, or the names that keep) per model name."""
    if isinstance(keep_intermediates, bool):
        return {n: keep_intermediates for n in names}
    if isinstance(keep_intermediates, (str, bytes)) or not isinstance(keep_intermediates, Collection):
        raise ConfigError("keep_intermediates", keep_intermediates,
                          "True, False or a list of model names")
    unknown = [k for k in keep_intermediates if k not in names]
    if unknown:
        raise ConfigError("keep_intermediates", unknown, f"names from {names}")
    return {n: n in keep_intermediates for n in names}


def _summary(name, prefix, ms: List[float], threads, onednn, batch: int = 1) -> Latency:
    a = np.asarray(ms, dtype=float)
    p25, med, p75 = np.percentile(a, [25, 50, 75])
    return Latency(name, prefix, float(med), float(p25), float(p75), float(a.min()),
                   float(a.max()), len(ms), threads, onednn, batch)


def measure_latency(prefixes: Dict[str, str], threads: int = 1, onednn: bool = True,
                    warmup: int = 10, rounds: int = 20, runs_per_round: int = 5,
                    input_shape: Optional[Sequence[int]] = None, seed: int = 0,
                    run_only: bool = False,
                    keep_intermediates: Union[bool, Collection[str]] = False) -> List[Latency]:
    """Median (and p25/p75, min/max) ms per run of each model, in input order; batch 1
    unless ``input_shape`` says otherwise.

    ``prefixes`` maps a display name to an inference-model prefix. Every run is one
    sample: ``rounds * runs_per_round`` samples per model. ``run_only`` copies the
    input in once and times the predictor's run alone (no copies in or out: how a
    layer costs inside a network). ``keep_intermediates`` creates the predictors with
    eager deletion off (:func:`~slim_callbacks.deploy.runtime.predictor`): True for all,
    or the names of the models that keep (the same prefix may appear twice, under two
    names, to time both settings side by side).
    """
    if not prefixes:
        raise SlimError("measure_latency: no models given")
    check_threads(threads)
    for label, value, low in (("rounds", rounds, 1), ("runs_per_round", runs_per_round, 1),
                              ("warmup", warmup, 0)):
        check_int(label, value, low)
    names = list(prefixes)
    keeping = _keeping(names, keep_intermediates)
    rng = np.random.default_rng(seed)
    preds, inputs = {}, {}
    for name in names:
        preds[name] = predictor(prefixes[name], threads=threads, onednn=onednn,
                                keep_intermediates=keeping[name], input_shape=input_shape,
                                batch=1)
        inputs[name] = _random_inputs(preds[name], name, input_shape, rng)
    if run_only:
        for name in names:
            run(preds[name], inputs[name])

    def once(name):
        if run_only:
            preds[name].run()
        else:
            run(preds[name], inputs[name])

    for name in names:
        for _ in range(warmup):
            once(name)
    samples: Dict[str, List[float]] = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for _ in range(runs_per_round):
                start = _clock()
                once(name)
                samples[name].append((_clock() - start) * 1000.0)
    return [_summary(n, prefixes[n], samples[n], threads, onednn, len(inputs[n][0]))
            for n in names]


def measure_latency_all_cores(prefixes: Dict[str, str], **kwargs) -> List[Latency]:
    """``measure_latency`` with one math-library thread per CPU core."""
    return measure_latency(prefixes, threads=os.cpu_count() or 1, **kwargs)


def format_latency_table(results: Sequence[Latency]) -> str:
    """A text table: median, p25-p75, min-max and speedup relative to the first model."""
    if not results:
        return "(no models)"
    base = results[0].median_ms
    width = max(5, max(len(r.name) for r in results))
    head = (f"{'model':<{width}}  {'median ms':>10}  {'p25-p75 ms':>17}  "
            f"{'min-max ms':>17}  {'speedup':>7}")
    lines = [head]
    for r in results:
        lines.append(f"{r.name:<{width}}  {r.median_ms:>10.3f}  "
                     f"{f'{r.p25_ms:.3f}-{r.p75_ms:.3f}':>17}  "
                     f"{f'{r.min_ms:.3f}-{r.max_ms:.3f}':>17}  "
                     f"{base / r.median_ms:>6.2f}x")
    r0 = results[0]
    lines.append(f"({r0.samples} runs per model, batch {r0.batch}, {r0.threads} thread(s), "
                 f"oneDNN {'on' if r0.onednn else 'off'}; speedup vs {r0.name})")
    if overhead_bound(base):
        lines.append(f"{r0.name} runs in under {OVERHEAD_BOUND_MS:g} ms: overhead-bound, mostly "
                     f"Paddle's fixed per-op cost; time the models at the input size you deploy")
    return "\n".join(lines)
