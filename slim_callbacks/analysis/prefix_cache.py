"""The prefix cache of sensitivity analysis: what runs before a group's first changed
layer is computed once per group and replayed, exactly, for the group's other ratios.

Owns :class:`PrefixCache` and its input comparison (``_versions``, ``_same``). Its log
records go to the ``slim_callbacks.analysis.sensitivity`` logger, as before the split.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import paddle

# the records belong to the sensitivity analysis: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.sensitivity")

DEFAULT_CACHE_BYTES = 2 ** 30  # prefix cache limit per group with cache=True


def _versions(value) -> Optional[list]:
    """In-place versions of the tensors in ``value`` (a tensor or a flat tuple/list of
    tensors and plain constants); None if it holds anything else."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    out = []
    for item in items:
        if isinstance(item, paddle.Tensor):
            out.append(item._inplace_version())
        elif item is None or isinstance(item, (bool, int, float, str)):
            out.append(None)
        else:
            return None
    return out


def _same(now, cached, versions) -> bool:
    """``now`` equals what ``cached`` held when it was recorded (in-place versions
    unchanged, then identity or an exact element-wise comparison)."""
    now_items = now if isinstance(now, (tuple, list)) else (now,)
    cached_items = cached if isinstance(cached, (tuple, list)) else (cached,)
    if len(now_items) != len(cached_items) or type(now) is not type(cached):
        return False
    for a, b, version in zip(now_items, cached_items, versions):
        if not isinstance(b, paddle.Tensor):
            if isinstance(a, paddle.Tensor) or type(a) is not type(b) or a != b:
                return False
            continue
        if not isinstance(a, paddle.Tensor) or b._inplace_version() != version:
            return False
        if a is b:
            continue
        if (list(a.shape) != list(b.shape) or a.dtype != b.dtype or str(a.place) != str(b.place)
                or not bool(paddle.equal_all(a, b))):
            return False
    return True


class PrefixCache:
    """Computes the part of an evaluation that comes before a group's changed layers
    once, and replays it for the group's other ratios.

    ``changed`` are the layers whose parameters or attributes the remover touches
    (``in`` consumers for masking, every member for in-place pruning). A sublayer is
    *cacheable* when neither it nor any of its descendants is changed. During the
    first evaluation, every forward of the network is wrapped: the top-most cacheable
    sublayers called, in eval mode, before a changed layer starts within the current
    call of the network record their inputs and output, keyed by their call index
    within that ``eval_fn`` run. Later evaluations replace only those sublayers'
    ``forward`` with one that returns the recorded output for that call index if the
    input equals the recorded input exactly (same tensor object with an unchanged
    in-place version, or an element-wise comparison); on any mismatch the layer is
    computed and the cache is switched off for the group, so the answer is the one
    without caching even for an ``eval_fn`` that draws different data each time.
    Every replaced ``forward`` is put back in ``finally``.

    Memory: the recorded outputs of one group's prefix over the whole eval set
    (about the activations of the first half of the network for all eval batches,
    for an average group), freed when the next group starts.
    """

    def __init__(self, net: paddle.nn.Layer, changed: Sequence[str], name: str = "",
                 max_bytes: int = DEFAULT_CACHE_BYTES):
        layers = dict(net.named_sublayers())
        self.net, self.name = net, name
        changed_ids = {id(layers[n]) for n in changed if n in layers}
        unique = {id(layer): layer for layer in layers.values()}
        self.changed = [unique[i] for i in changed_ids]
        self.candidates = [layer for layer in unique.values()
                           if not any(id(s) in changed_ids for s in layer.sublayers(include_self=True))]
        self.records: Dict[int, Dict[int, tuple]] = {}
        self.recorded = False
        self.enabled = True
        self.hits = 0
        self.max_bytes, self.nbytes, self.full = max_bytes, 0, False

    @contextlib.contextmanager
    def _patched(self, wrappers: Mapping[int, Tuple[paddle.nn.Layer, Callable]]) -> Iterator[None]:
        saved = []
        try:
            for layer, make in wrappers.values():
                had = "forward" in vars(layer)
                original = layer.forward
                saved.append((layer, had, vars(layer).get("forward")))
                object.__setattr__(layer, "forward", make(original))
            yield
        finally:
            for layer, had, value in reversed(saved):
                if had:
                    object.__setattr__(layer, "forward", value)
                else:
                    object.__delattr__(layer, "forward")

    def _record_wrappers(self):
        status = {"dirty": False, "active": 0}
        counts: Dict[int, int] = {}

        def root(original):
            def forward(*args, **kwargs):
                status["dirty"] = False  # a new call of the network: its prefix runs again
                return original(*args, **kwargs)
            return forward

        def changed(original):
            def forward(*args, **kwargs):
                status["dirty"] = True
                return original(*args, **kwargs)
            return forward

        def candidate(layer):
            def make(original):
                def forward(*args, **kwargs):
                    index = counts[id(layer)] = counts.get(id(layer), -1) + 1
                    top = status["active"] == 0 and not status["dirty"]
                    inputs = (args, tuple(sorted(kwargs.items())))
                    flat = list(args) + [v for _, v in inputs[1]]
                    versions = _versions(flat) if top else None
                    status["active"] += 1
                    try:
                        output = original(*args, **kwargs)
                    finally:
                        status["active"] -= 1
                    if (versions is not None and not status["dirty"]
                            and not any(s.training for s in layer.sublayers(include_self=True))):
                        out_versions = _versions(output)
                        tensors = [output] if isinstance(output, paddle.Tensor) else list(output or ())
                        size = sum(int(np.prod(t.shape)) * t.element_size() for t in tensors
                                   if isinstance(t, paddle.Tensor))
                        if out_versions is None or not tensors or not all(
                                isinstance(t, paddle.Tensor) for t in tensors):
                            pass
                        elif self.nbytes + size > self.max_bytes:
                            if not self.full:
                                logger.debug("prefix cache of %s: %.0f MB limit reached; later "
                                             "calls are computed", self.name, self.max_bytes / 2**20)
                            self.full = True
                        elif not self.full:
                            self.nbytes += size
                            self.records.setdefault(id(layer), {})[index] = (
                                layer, tuple(flat), list(kwargs), versions, output, out_versions)
                    return output
                return forward
            return make

        wrappers = {id(layer): (layer, candidate(layer)) for layer in self.candidates}
        wrappers.update({id(layer): (layer, changed) for layer in self.changed})
        wrappers[id(self.net)] = (self.net, root)
        return wrappers

    def _replay_wrappers(self, keep: Optional[set] = None):
        counts: Dict[int, int] = {}

        def replay(layer, records):
            def make(original):
                def forward(*args, **kwargs):
                    index = counts[id(layer)] = counts.get(id(layer), -1) + 1
                    record = records.get(index)
                    if record is None or not self.enabled:
                        return original(*args, **kwargs)
                    _, flat, keys, versions, output, out_versions = record
                    now = list(args) + [kwargs[k] for k in sorted(kwargs)]
                    if (sorted(kwargs) == sorted(keys) and _same(tuple(now), flat, versions)
                            and _same(output, output, out_versions)):
                        self.hits += 1
                        return output
                    self.enabled = False
                    logger.debug("prefix cache of %s: call %d of %s has another input than in "
                                 "the first evaluation; computing the whole network for this group",
                                 self.name, index, type(layer).__name__)
                    return original(*args, **kwargs)
                return forward
            return make

        return {key: (records[next(iter(records))][0], replay(records[next(iter(records))][0], records))
                for key, records in self.records.items() if keep is None or key in keep}

    def evaluate(self, run: Callable[[], float], previous: Optional["PrefixCache"] = None) -> float:
        """``run()`` (one evaluation), recording the prefix the first time and replaying
        it afterwards while it matches. During the recording evaluation, ``previous``
        (the cache of the group analysed before) replays its layers that are cacheable
        for this group too, so a group's first evaluation need not recompute what the
        group before already had (same input check, so equally exact)."""
        if not self.recorded:
            try:
                with contextlib.ExitStack() as stack:
                    if previous is not None and previous.enabled and previous.records:
                        keep = {id(layer) for layer in self.candidates}
                        stack.enter_context(previous._patched(previous._replay_wrappers(keep)))
                    stack.enter_context(self._patched(self._record_wrappers()))
                    return run()
            finally:
                self.recorded = True
        if not self.enabled or not self.records:
            return run()
        with self._patched(self._replay_wrappers()):
            return run()
