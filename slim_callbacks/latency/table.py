"""Measured latency of single layers at given widths, cached as JSON per runtime.

A :class:`LayerSpec` is one Conv2D or Linear layer with its input size (what a layer
of a network looks like at some channel counts). :class:`LatencyTable` times the
specs it has not seen, each exported on its own and run in Paddle Inference (batch 1,
interleaved rounds by :func:`~slim_callbacks.latency.measure.measure_latency`, timing
the predictor's run alone, in batches of specs in a seeded random order), and
keeps the medians in ``<dir>/<key>.json``. The key names the runtime (Paddle version,
oneDNN on/off), the thread count and the machine (CPU model, core count), so a table
measured elsewhere is never reused. ``dir`` is ``$SLIM_CALLBACKS_LATENCY_CACHE`` or
``~/.cache/slim_callbacks/latency``.

Examples:
    >>> import tempfile
    >>> table = LatencyTable(directory=tempfile.mkdtemp(), rounds=2, runs_per_round=1, warmup=1)
    >>> specs = [LayerSpec("conv", 8, w, (1, 1), hw=(8, 8)) for w in (4, 8)]
    >>> ms = table.lookup(specs)
    >>> len(ms), all(v > 0 for v in ms), table.measured
    (2, True, 2)
    >>> _ = table.lookup(specs); table.measured   # cached: nothing new is timed
    2
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import paddle

from slim_callbacks.core.checks import check_bool, check_int
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.deploy import runtime
from slim_callbacks.deploy.runtime import save_inference_model
from slim_callbacks.latency import measure

CACHE_ENV = "SLIM_CALLBACKS_LATENCY_CACHE"
_MEASURING_OFF: List[str] = []  # why measuring is off (innermost last); empty: on
BATCH = 32  # specs per interleaved measurement (in a seeded random order)
KINDS = ("conv", "linear")


@dataclass(frozen=True)
class LayerSpec:
    """One layer: ``conv`` (Conv2D, input ``[1, in_ch, *hw]``) or ``linear`` (input
    ``[1, positions, in_ch]``, or ``[1, in_ch]`` for one position).

    >>> LayerSpec("conv", 32, 32, (3, 3), stride=2, padding=1, groups=32, hw=(56, 56)).key
    'conv i32 o32 k3x3 s2 p1 d1 g32 @56x56'
    """
    kind: str
    in_ch: int
    out_ch: int
    kernel: Tuple[int, int] = (1, 1)
    stride: Union[int, Tuple[int, ...]] = 1
    padding: Union[int, str, Tuple[int, ...]] = 0
    dilation: Union[int, Tuple[int, ...]] = 1
    groups: int = 1
    hw: Tuple[int, int] = (1, 1)
    positions: int = 1

    @property
    def key(self) -> str:
        if self.kind == "linear":
            return f"linear i{self.in_ch} o{self.out_ch} n{self.positions}"
        return (f"conv i{self.in_ch} o{self.out_ch} k{self.kernel[0]}x{self.kernel[1]} "
                f"s{self.stride} p{self.padding} d{self.dilation} g{self.groups} "
                f"@{self.hw[0]}x{self.hw[1]}")

    def build(self) -> Tuple[paddle.nn.Layer, List[int]]:
        """The layer (random weights) and its batch-1 input shape."""
        if self.kind == "linear":
            shape = [1, self.in_ch] if self.positions == 1 else [1, self.positions, self.in_ch]
            return paddle.nn.Linear(self.in_ch, self.out_ch), shape
        def arg(v):
            return list(v) if isinstance(v, tuple) else v
        layer = paddle.nn.Conv2D(self.in_ch, self.out_ch, list(self.kernel), stride=arg(self.stride),
                                 padding=arg(self.padding), dilation=arg(self.dilation),
                                 groups=self.groups)
        return layer, [1, self.in_ch, *self.hw]


def check_spec(spec: LayerSpec) -> LayerSpec:
    if not isinstance(spec, LayerSpec) or spec.kind not in KINDS:
        raise ConfigError("spec", spec, f"a LayerSpec of kind {' or '.join(KINDS)}")
    if spec.in_ch < 1 or spec.out_ch < 1 or spec.in_ch % spec.groups or spec.out_ch % spec.groups:
        raise ConfigError("spec", spec.key, "channel counts >= 1 divisible by groups")
    return spec


class NotMeasured(SlimError):
    """A timing that is not in the cache was needed while measuring is off."""


@contextlib.contextmanager
def measuring_off(reason: str):
    """Inside the block, tables answer from their cache only: a timing they lack raises
    :class:`NotMeasured` naming ``reason`` (e.g. ``"--no-measure"``).

    >>> with measuring_off("a test"):
    ...     LatencyTable(directory=tempfile.mkdtemp()).lookup([LayerSpec("linear", 2, 2)])
    Traceback (most recent call last):
    ...
    slim_callbacks.latency.table.NotMeasured: 1 latency timing(s) are not in the cache ...
    """
    _MEASURING_OFF.append(reason)
    try:
        yield
    finally:
        _MEASURING_OFF.pop()


def cache_dir(directory: Optional[str] = None) -> str:
    """``directory``, else ``$SLIM_CALLBACKS_LATENCY_CACHE``, else
    ``~/.cache/slim_callbacks/latency``."""
    if directory is not None:
        return os.fspath(directory)
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "slim_callbacks", "latency")


def machine_id() -> str:
    """CPU model, architecture and core count: what makes latencies comparable."""
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f
                          if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{platform.machine()} {model} x{os.cpu_count() or 1}"


def runtime_key(threads: int, onednn: bool, keep_intermediates: bool = False) -> str:
    """The cache key: runtime (with ``-keep`` when eager deletion is off), threads and
    machine (a short hash of the CPU).

    >>> runtime_key(1, True).startswith("paddle_inference-" + paddle.__version__ + "-onednn-t1-")
    True
    >>> "-onednn-keep-t1-" in runtime_key(1, True, keep_intermediates=True)
    True
    """
    digest = hashlib.sha1(machine_id().encode()).hexdigest()[:10]
    keep = "-keep" if keep_intermediates else ""
    return (f"paddle_inference-{paddle.__version__}-{'onednn' if onednn else 'native'}{keep}"
            f"-t{threads}-{digest}")


class LatencyTable:
    """Median ms of batch-1 runs per :class:`LayerSpec` (or named network), measured once
    per runtime/threads/machine and kept in a JSON file. ``keep_intermediates`` times
    with Paddle Inference's eager deletion off (a runtime setting of its own, with its
    own file: :func:`~slim_callbacks.deploy.runtime.predictor`).

    ``measured`` counts the specs timed by this object (cache hits are not timed).
    """

    def __init__(self, threads: int = 1, onednn: bool = True, directory: Optional[str] = None,
                 rounds: int = 10, runs_per_round: int = 5, warmup: int = 5,
                 keep_intermediates: bool = False):
        self.threads = check_int("threads", threads, 1)
        self.onednn = check_bool("onednn", onednn)
        self.keep_intermediates = runtime.keeps_intermediates(
            check_bool("keep_intermediates", keep_intermediates))
        self.options = {"rounds": check_int("rounds", rounds, 1),
                        "runs_per_round": check_int("runs_per_round", runs_per_round, 1),
                        "warmup": check_int("warmup", warmup, 0)}
        self.key = runtime_key(self.threads, self.onednn, self.keep_intermediates)
        self.path = os.path.join(cache_dir(directory), self.key + ".json")
        self.entries: Dict[str, float] = self._load()
        self.measured = 0

    def _load(self) -> Dict[str, float]:
        if not os.path.isfile(self.path):
            return {}
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return {str(k): float(v) for k, v in data["entries"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise SlimError(f"latency table {self.path} is unreadable ({err}); delete it to "
                            f"measure afresh") from None

    def save(self) -> None:
        folder = os.path.dirname(self.path)
        try:
            os.makedirs(folder, exist_ok=True)
            data = {"key": self.key, "runtime": "paddle_inference", "paddle": paddle.__version__,
                    "onednn": self.onednn, "keep_intermediates": self.keep_intermediates,
                    "threads": self.threads, "machine": machine_id(),
                    "entries": dict(sorted(self.entries.items()))}
            fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(data, f, indent=1)
            os.replace(tmp, self.path)
        except OSError as err:
            raise SlimError(f"cannot write the latency table {self.path} ({err}); set "
                            f"{CACHE_ENV} to a writable directory") from None

    def lookup(self, specs: Sequence[LayerSpec]) -> List[float]:
        """Median ms of each spec, timing (and caching) the ones not in the table."""
        specs = [check_spec(s) for s in specs]
        missing = list(dict.fromkeys(s for s in specs if s.key not in self.entries))
        # shuffled, so a slow spell on a shared machine is noise, not a step between
        # neighbouring widths measured in the same batch
        missing = [missing[i] for i in np.random.default_rng(len(missing)).permutation(len(missing))]
        self._may_measure(len(missing))
        for i in range(0, len(missing), BATCH):
            self._time({s.key: s.build for s in missing[i:i + BATCH]})
        return [self.entries[s.key] for s in specs]

    def networks_ms(self, networks: Dict[str, Callable[[], paddle.nn.Layer]],
                    input_shape: Sequence[int], refresh: bool = False) -> Dict[str, float]:
        """Median ms of whole networks (``name -> factory``, called when it is exported),
        cached under their names (fingerprints). If one is missing (or ``refresh``), all
        are timed again side by side, so they share the conditions."""
        keys = {name: f"network {name}" for name in networks}
        if refresh or any(key not in self.entries for key in keys.values()):
            self._may_measure(len(networks))
            shape = as_inputs(input_shape).with_batch(1)
            self._time({keys[n]: (lambda f=f: (f(), shape)) for n, f in networks.items()},
                       rounds_scale=2 if len(networks) <= 2 else 1)
        return {name: self.entries[key] for name, key in keys.items()}

    def _may_measure(self, count: int) -> None:
        if count and _MEASURING_OFF:
            raise NotMeasured(f"{count} latency timing(s) are not in the cache {self.path} and "
                              f"measuring is off ({_MEASURING_OFF[-1]}); run once without it "
                              f"to measure and cache them")

    def _time(self, models: Dict[str, Callable[[], Tuple[paddle.nn.Layer, List[int]]]],
              rounds_scale: int = 1) -> None:
        """Exports each ``key -> factory of (layer, input shape)`` (one at a time) and
        times them all side by side."""
        with tempfile.TemporaryDirectory(prefix="slim_latency_") as tmp:
            prefixes = {}
            for i, (key, make) in enumerate(models.items()):
                layer, shape = make()
                prefixes[key] = os.path.join(tmp, str(i), "model")
                save_inference_model(layer, prefixes[key], shape)
                del layer
            options = dict(self.options, rounds=self.options["rounds"] * rounds_scale)
            results = measure.measure_latency(prefixes, threads=self.threads, onednn=self.onednn,
                                              run_only=True,
                                              keep_intermediates=self.keep_intermediates,
                                              **options)
        for r in results:
            self.entries[r.name] = r.median_ms
        self.measured += len(results)
        self.save()
