"""Layer surgery: shrink parameters in place and keep the optimizer consistent.

Parameters keep their identity (the optimizer built by ``paddle.Model.prepare`` holds
these very objects): their storage is replaced with the kept slices. Every optimizer
accumulator and master weight shaped like the old parameter is sliced the same way
(Momentum's velocity, Adam's moments), because a stale Momentum velocity is silently
reused and a stale Adam moment fails. Gradients are dropped. Channel attributes
(a conv's ``_in_channels``/``_out_channels``/``_groups``, a BatchNorm's ``_num_features``,
whatever a registered kind lists; see :mod:`slim_callbacks.tracing.kinds`) follow the
new shapes so ``print(net)``, ``paddle.summary`` and ``paddle.jit.save`` are
true. Nothing full-size is kept.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import paddle

from slim_callbacks.tracing.kinds import channel_attributes, sync_attributes

logger = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Blocks:
    """Kept indices along one axis that differ per block of another: a grouped conv's
    weight ``[C_out, C_in / groups, k...]`` whose group ``j`` keeps its own input
    columns ``kept[j]`` for its own output rows (block ``j`` of axis ``along``).

    >>> w = np.arange(8).reshape(4, 2)  # 2 blocks of 2 rows
    >>> Blocks(0, np.array([[0], [1]])).take(w, 1).ravel().tolist()
    [0, 2, 5, 7]
    """

    along: int
    kept: np.ndarray  # [blocks, kept per block]

    def take(self, array: np.ndarray, axis: int) -> np.ndarray:
        chunks = np.split(array, len(self.kept), axis=self.along)
        return np.concatenate([np.take(c, np.asarray(k, dtype=np.int64), axis=axis)
                               for c, k in zip(chunks, self.kept)], axis=self.along)


# (layer name, attribute) -> {axis: kept indices, or Blocks}
Cuts = Dict[Tuple[str, str], Dict[int, Union[np.ndarray, Blocks]]]


def concrete_place(place):
    """The typed place (CPUPlace, CUDAPlace) that ``DenseTensor.set`` accepts."""
    if place.is_gpu_place():
        return paddle.CUDAPlace(place.gpu_device_id())
    return paddle.CPUPlace()


def set_storage(tensor, array: np.ndarray) -> None:
    """Replaces a tensor's data (and shape) in place, keeping the Python object."""
    tensor.value().get_tensor().set(np.ascontiguousarray(array), concrete_place(tensor.place))


def take(array: np.ndarray, kept: Dict[int, Union[np.ndarray, Blocks]]) -> np.ndarray:
    """``array`` with only the ``kept`` indices per axis; :class:`Blocks` first (their
    blocks are those of the full axis they run along)."""
    for axis, index in sorted(kept.items()):
        if isinstance(index, Blocks):
            array = index.take(array, axis)
    for axis, index in sorted(kept.items()):
        if not isinstance(index, Blocks):
            array = np.take(array, np.asarray(index, dtype=np.int64), axis=axis)
    return array


def optimizer_states(optimizer, param) -> Iterator[paddle.Tensor]:
    """Accumulators and master weights of ``param`` shaped like it."""
    if optimizer is None:
        return
    shape = list(param.shape)
    for per_param in getattr(optimizer, "_accumulators", {}).values():
        state = per_param.get(param.name)
        if state is not None and list(state.shape) == shape:
            yield state
    master = getattr(optimizer, "_master_weights", {}).get(param.name)
    if master is not None and list(master.shape) == shape:
        yield master


@dataclasses.dataclass
class Removal:
    """What a cut takes out of one tensor, enough to put it back from the kept part:
    along each cut axis in turn, the removed slices of what earlier axes kept (their
    sizes add up to the removed elements, not to a second copy of the tensor). A cut
    with :class:`Blocks` keeps a whole copy instead.

    >>> t = paddle.to_tensor(np.arange(12.0).reshape(3, 4))
    >>> removal = Removal.cut(t, {0: np.array([0, 2]), 1: np.array([3, 1])})
    >>> list(t.shape), [part.shape for part in removal.parts]
    ([2, 2], [(1, 4), (2, 2)])
    >>> removal.restore(); t.numpy().tolist()[1]
    [4.0, 5.0, 6.0, 7.0]
    """

    tensor: paddle.Tensor
    shape: List[int]
    kept: Dict[int, np.ndarray]
    parts: List[np.ndarray]

    @classmethod
    def cut(cls, tensor, kept) -> "Removal":
        """Keeps only the ``kept`` indices of ``tensor`` (as :func:`take`), in place, and
        returns what went."""
        array = tensor.numpy()
        shape = list(array.shape)
        if any(isinstance(index, Blocks) for index in kept.values()):
            set_storage(tensor, take(array, kept))
            return cls(tensor, shape, {}, [array])
        kept = {a: np.asarray(i, dtype=np.int64) for a, i in sorted(kept.items())}
        parts = []
        for axis, index in kept.items():
            parts.append(np.take(array, _removed(index, array.shape[axis]), axis=axis))
            array = np.take(array, index, axis=axis)
        set_storage(tensor, array)
        return cls(tensor, shape, kept, parts)

    def restore(self) -> None:
        """Puts the tensor back as it was (nothing to do if it was not cut yet)."""
        if list(self.tensor.shape) == self.shape:
            return
        if not self.kept:
            set_storage(self.tensor, self.parts[0])
            return
        array = self.tensor.numpy()
        for (axis, index), part in reversed(list(zip(self.kept.items(), self.parts))):
            full = np.empty(array.shape[:axis] + (self.shape[axis],) + array.shape[axis + 1:],
                            dtype=array.dtype)
            at = [slice(None)] * array.ndim
            at[axis] = index
            full[tuple(at)] = array
            at[axis] = _removed(index, self.shape[axis])
            full[tuple(at)] = part
            array = full
        set_storage(self.tensor, array)


def _removed(kept: np.ndarray, size: int) -> np.ndarray:
    """The indices below ``size`` that are not in ``kept``, in order."""
    gone = np.ones(size, dtype=bool)
    gone[kept] = False
    return np.flatnonzero(gone)


@contextlib.contextmanager
def rollback_on_error(layers: Dict[str, paddle.nn.Layer], cuts: Cuts) -> Iterator[List[Removal]]:
    """Restores every cut tensor and the layers' channel attributes if the block raises.
    Yields the list that :func:`apply_cuts` fills with its :class:`Removal`s: what is kept
    meanwhile is the removed parts, not a copy of every tensor."""
    saved: List[Removal] = []
    attrs = {name: channel_attributes(layers[name]) for name, _ in cuts}
    try:
        yield saved
    except BaseException:
        for removal in reversed(saved):
            removal.restore()
        for name, state in attrs.items():
            for key, value in state.items():
                setattr(layers[name], key, value)
        raise


def apply_cuts(layers: Dict[str, paddle.nn.Layer], cuts: Cuts, optimizer=None,
               saved: Optional[List[Removal]] = None) -> None:
    """Keeps only the given indices of every listed parameter, in place.

    Args:
        layers: structural name -> layer.
        cuts: (layer, attribute) -> {axis: kept indices}.
        optimizer: the optimizer training these parameters, if any.
        saved: if given, each cut's :class:`Removal` is appended (for
            :func:`rollback_on_error`).
    """
    before = {name: channel_attributes(layers[name]) for name, _ in cuts}
    for (name, attr), kept in cuts.items():
        param = layers[name]._parameters[attr]
        for tensor in list(optimizer_states(optimizer, param)) + [param]:
            if saved is None:
                set_storage(tensor, take(tensor.numpy(), kept))
            else:
                saved.append(Removal.cut(tensor, kept))
        param.clear_gradient(False)
    for name in dict.fromkeys(name for name, _ in cuts):
        sync_attributes(layers[name], before[name])
