"""Sizes in the network's code while tracing: which ones follow pruning, and from what.

A reshape such as ``x.reshape([B, g, C // g, H, W])`` stays valid after pruning only
if the size that takes a labelled axis's channel count changes with those channels.
Three kinds of size are told apart:

- :class:`RuntimeSize`: read from ``Tensor.shape`` (or computed from such sizes with
  ``+ - * //``). It remembers the atoms of the axis it was read from (its *source*),
  so a size read from one tensor and used to reshape another is recognised: it
  follows the wrong channels.
- :class:`AttrSize`: a plain ``int`` attribute of one of the user's layers
  (``self.head_dim``), tagged for the trace. It can be made to follow: pruning sets
  the attribute to the new count, unless the code also computes with it
  (``self.head_dim ** -0.5``): then it is marked *derived* and counts as a literal. A
  shape size divided by it (``C // self.num_heads``) is a *quotient* instead: the size
  still follows that shape (a channel shuffle), and the attribute may still follow
  if the shape's channels are its units, in equal shares (see :data:`QUOTIENTS`).
- any other ``int``: a literal written in the code, fixed.

Whether an attribute or a ratio of widths can really follow is known only once the
trace has coupled everything: :func:`block_sizes_that_cannot_follow` and
:func:`block_ratios_that_cannot_hold` then refuse the channels where it cannot.

    >>> size = RuntimeSize(8, np.array([3, 4]))
    >>> (size // 2).source.tolist(), (size // AttrSize(2, ("shuffle", "groups"))).source.tolist()
    ([3, 4], [3, 4])
    >>> (AttrSize(2, ("shuffle", "groups")) * size).source.tolist()  # either order
    [3, 4]
"""
from __future__ import annotations

import contextlib
import os
import sys
from typing import Callable, Dict, Iterator, List, Optional, Set, Tuple

import numpy as np

NO_SOURCE = np.zeros(0, dtype=np.int64)


class AttrSize(int):
    """An ``int`` attribute of a user layer, tagged while tracing: ``owner`` is
    ``(structural layer name, attribute)``. Arithmetic on it gives a plain ``int`` and
    records the attribute in :data:`DERIVED` (its value feeds other numbers)."""

    owner: Tuple[str, str]

    def __new__(cls, value: int, owner: Tuple[str, str]):
        size = super().__new__(cls, value)
        size.owner = owner
        return size


#: words in the name of an attribute that counts what a detector head decodes
#: (``num_classes``, ``cls_out_channels``, ``reg_max``, ``reg_channels``, ``num_anchors``,
#: ``angle_max``, ``num_keypoints``): channels sized by one feed decoding and stay whole
DECODING_WORDS = ("class", "anchor", "reg_", "angle", "keypoint", "joint")


def is_decoding_size(size) -> bool:
    """True for a layer attribute that counts decoded quantities (see
    :data:`DECODING_WORDS`): the number of classes is the user's, not pruning's.

    >>> is_decoding_size(AttrSize(80, ("head", "num_classes"))), is_decoding_size(80)
    (True, False)
    """
    return isinstance(size, AttrSize) and any(w in size.owner[1].lower() for w in DECODING_WORDS)


DERIVED: Set[Tuple[str, str]] = set()  # attributes used in arithmetic during the trace
#: attribute -> the atoms along the axes of the shape sizes divided by it, in order
#: (``C // self.num_heads``); None where that order is not known
QUOTIENTS: Dict[Tuple[str, str], List[Optional[np.ndarray]]] = {}


def _attr_arithmetic(name: str):
    int_method = getattr(int, name)

    def method(self, *other):
        if other and isinstance(other[0], RuntimeSize) and name in _RUNTIME_METHODS:
            return NotImplemented  # self.groups * C: C's reflected method keeps its source
        DERIVED.add(self.owner)
        return int_method(int(self), *other)
    return method


class RuntimeSize(int):
    """A size read from ``Tensor.shape`` while tracing, or computed from one with
    ``+ - * //``; ``source`` holds the atoms of the axis it came from (empty for an
    axis without channels) and ``order`` their sequence along it (None if unknown, e.g.
    after adding two sizes). Unlike a literal it follows pruning, but only the
    channels of its source.

    ``dims`` writes a product or quotient of channel counts as factors ``(positions of
    a source axis, exponent)``: PVT's ``kv.shape[2] * kv.shape[1] // 2 // C`` is
    ``((kv channels, 1), (x channels, -1))``, a token count that stays right while
    both widths shrink in proportion (see :func:`cancels`). None once a sum mixes in
    a channel count (``C + 1``)."""

    source: np.ndarray
    order: Optional[np.ndarray]
    dims: Optional[tuple]

    def __new__(cls, value: int, source: np.ndarray = NO_SOURCE,
                order: Optional[np.ndarray] = None, dims: Optional[tuple] = ()):
        size = super().__new__(cls, value)
        size.source, size.order = source, order
        if dims == () and source.size:
            dims = ((order if order is not None else source, 1),)
        size.dims = dims
        return size

    def __int__(self):
        """``int()`` in the network's own code (``int(C // heads)``) makes the size a plain
        number that may size another tensor; the trace blocks the source (see
        :data:`ON_INT`)."""
        if self.source.size and ON_INT and _called_by_network_code():
            ON_INT[-1](self.source)
        return int.__int__(self)


ON_INT: List[Callable[[np.ndarray], None]] = []  # set by the tracer while it intercepts


def _library_dirs() -> tuple:
    import importlib.util
    spec = importlib.util.find_spec("paddle")
    paddle_dirs = tuple(os.path.abspath(d) + os.sep for d in (spec.submodule_search_locations or [])) if spec else ()
    return paddle_dirs + tuple(os.path.dirname(os.path.abspath(m.__file__)) + os.sep
                               for m in (np, contextlib)) + (
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep,)


_LIBRARY_DIRS = _library_dirs()


def _called_by_network_code() -> bool:
    """True if the running ``int()`` was called outside Paddle, numpy, the standard
    library and slim_callbacks."""
    caller = os.path.abspath(sys._getframe(2).f_code.co_filename)
    return not caller.startswith(_LIBRARY_DIRS)


def _negated(dims: Optional[tuple]) -> Optional[tuple]:
    return None if dims is None else tuple((positions, -power) for positions, power in dims)


def _result_dims(name: str, size: "RuntimeSize", other) -> Optional[tuple]:
    """The channel factors of ``size <name> other``."""
    theirs = other.dims if isinstance(other, RuntimeSize) else ()
    if size.dims is None or theirs is None:
        return None
    if name in ("__mul__", "__rmul__"):
        return size.dims + theirs
    if name == "__floordiv__":
        return size.dims + _negated(theirs)
    if name == "__rfloordiv__":
        return theirs + _negated(size.dims)
    return () if not size.dims and not theirs else None  # a sum of channel counts


def cancels(dims: Optional[tuple]) -> bool:
    """True if the channel factors of a size cancel (exponents sum to 0): the size stays
    the same while every factor's width shrinks in the same proportion.

    >>> c = RuntimeSize(8, np.array([1, 2]))
    >>> cancels((c * 3 // c).dims), cancels((c * c).dims), cancels(((c + 1) // c).dims)
    (True, False, False)
    """
    return bool(dims) and sum(power for _, power in dims) == 0


def _runtime_arithmetic(name: str):
    int_method = getattr(int, name)

    def method(self, other):
        if isinstance(other, AttrSize):  # c // self.groups: the attribute is a constant here
            if name == "__floordiv__" and self.source.size:
                QUOTIENTS.setdefault(other.owner, []).append(self.order)
            else:
                DERIVED.add(other.owner)
            other = int(other)
        result = int_method(self, other)
        if type(result) is not int:
            return result
        source, order = self.source, self.order
        if isinstance(other, RuntimeSize) and other.source.size:
            source, order = np.union1d(source, other.source), None
        return RuntimeSize(result, source, order, _result_dims(name, self, other))
    return method


_RUNTIME_METHODS = ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
                    "__floordiv__", "__rfloordiv__")
for _name in _RUNTIME_METHODS:
    setattr(RuntimeSize, _name, _runtime_arithmetic(_name))
for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__",
              "__floordiv__", "__rfloordiv__", "__truediv__", "__rtruediv__", "__pow__",
              "__rpow__", "__mod__", "__rmod__", "__neg__"):
    setattr(AttrSize, _name, _attr_arithmetic(_name))


def source_of(labels: np.ndarray, axis: int) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """The atoms a size read from ``axis`` of a tensor with ``labels`` follows, and their
    order along that axis (None unless the labels vary along that axis only)."""
    axis = axis % labels.ndim
    if labels.shape[axis] == 1:
        return NO_SOURCE, None
    values = np.unique(labels)
    others = [a for a in range(labels.ndim) if a != axis and labels.shape[a] > 1]
    order = None if others else labels.reshape(-1).copy()
    return values[values > 0], order


#: Paddle layers whose int attributes size their reshapes (``[0, 0, self.num_heads, self.head_dim]``)
TAGGED_PADDLE_LAYERS = ("MultiHeadAttention",)


def is_user_layer(layer) -> bool:
    """A layer class written outside Paddle (its attributes are the user's), or one of
    :data:`TAGGED_PADDLE_LAYERS`."""
    return (not type(layer).__module__.startswith("paddle.")
            or type(layer).__name__ in TAGGED_PADDLE_LAYERS)


@contextlib.contextmanager
def tagged_attributes(layers: Dict[str, object]) -> Iterator[None]:
    """Replaces every ``int`` attribute of the user's layers by an
    :class:`AttrSize` for the block, and clears :data:`DERIVED` and :data:`QUOTIENTS`;
    restored afterwards."""
    tagged = []
    DERIVED.clear()
    QUOTIENTS.clear()
    try:
        for name, layer in layers.items():
            if not is_user_layer(layer):
                continue
            for attr, value in list(vars(layer).items()):
                if type(value) is int and not attr.startswith("__"):
                    vars(layer)[attr] = AttrSize(value, (name, attr))
                    tagged.append((layer, attr, value))
        yield
    finally:
        for layer, attr, value in tagged:
            if isinstance(vars(layer).get(attr), AttrSize):
                vars(layer)[attr] = value


def block_sizes_that_cannot_follow(tracer) -> None:
    """After the trace: refuses the channels sized by a layer attribute (see
    ``Tracer.size_follows``) that pruning cannot set to their new count - one the code
    also computes with, divides another size by unevenly, uses for other channels too,
    or that does not count the channels one for one."""
    for owner, atoms in tracer.sizes.items():
        layer, attr = owner
        uses = np.concatenate(tracer.size_uses[owner])  # q, k and v alike: all or none
        tracer.site = ("reshape", layer)  # where the size is used, for explain()
        if owner in DERIVED:
            tracer.refuse(uses, f"is sized by {layer}.{attr}, which the code also "
                                f"computes with, so it cannot follow pruning")
        elif not all(_divides_evenly(tracer, source, atoms) for source in QUOTIENTS.get(owner, [])):
            tracer.refuse(uses, f"is sized by {layer}.{attr}, which the code also divides "
                                f"another size by, so it cannot follow pruning")
        elif not all(tracer.same_units(atoms, other) for other in tracer.size_uses[owner]):
            tracer.refuse(np.concatenate(tracer.size_uses[owner]),
                          f"is sized by {layer}.{attr}, which also sizes other "
                          f"channels")
        elif len(tracer.units_of(atoms)) != tracer.size_values[owner]:
            tracer.refuse(atoms, f"is sized by {layer}.{attr} = {tracer.size_values[owner]}, "
                                 f"which does not count its channels one for one")
    tracer.site = None


def _divides_evenly(tracer, order: Optional[np.ndarray], atoms: np.ndarray) -> bool:
    """True if a size read from an axis whose atoms are ``order``, divided by the
    attribute that counts the units of ``atoms``, keeps its value after pruning
    (``C // self.num_heads`` with each head coupled to ``C // num_heads`` of the
    ``C`` channels): that axis holds those units, each as many times."""
    if order is None or not tracer.same_units(order[order > 0], atoms) or (order == 0).any():
        return False
    roots = tracer.roots_of(order)
    return len(set(np.unique(roots, return_counts=True)[1].tolist())) == 1


def block_ratios_that_cannot_hold(tracer) -> None:
    """After the trace: refuses the widths behind a size whose factors cancel (see
    ``Tracer.size_keeps_ratio``) unless every unit removes the same share of each
    factor's positions."""
    for dims, reason in tracer.ratios:
        positions = [np.asarray(p) for p, _ in dims]
        if any((p == 0).any() for p in positions):  # a position that cannot shrink
            tracer.refuse(np.concatenate(positions), reason)
            continue
        roots = [tracer.roots_of(p) for p in positions]
        if any(len({float(np.mean(r == root)) for r in roots}) > 1
               for root in np.unique(np.concatenate(roots))):
            tracer.refuse(np.concatenate(positions), reason)
