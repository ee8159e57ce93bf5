"""Removing one group's units for an evaluation and putting the network back.

Owns :class:`NetworkState` (train/eval flags and state tensors saved before the
analysis), :class:`GroupMask` (zeroes the consumer input slices, ``method="mask"``)
and :class:`GroupPrune` (physical pruning in place, ``method="prune"``); both undo
their change when their ``applied`` block ends.
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Mapping, Tuple

import numpy as np
import paddle

from slim_callbacks.engine.plan import add_removed, cuts_of
from slim_callbacks.engine.surgery import apply_cuts, set_storage
from slim_callbacks.tracing.groups import IN, ChannelGroup
from slim_callbacks.tracing.kinds import channel_attributes


class NetworkState:
    """Train/eval flags and every state tensor of a network, to put back later."""

    def __init__(self, network: paddle.nn.Layer):
        self.modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
        self.tensors = [(name, t, np.array(t.numpy(), copy=True))
                        for name, t in network.state_dict().items()]

    def restore_modes(self) -> None:
        for layer, training in self.modes:
            layer.training = training

    def changed(self) -> List[str]:
        return [name for name, t, saved in self.tensors
                if list(t.shape) != list(saved.shape) or not np.array_equal(t.numpy(), saved)]

    def restore(self) -> List[str]:
        """Puts back every tensor that differs; returns their names."""
        changed = self.changed()
        for name, t, saved in self.tensors:
            if name in changed:
                set_storage(t, saved)
        self.restore_modes()
        return changed


def saved_params(members, layers: Mapping[str, paddle.nn.Layer]) -> Dict[Tuple[str, str], tuple]:
    """(layer, attr) -> (parameter, a copy of its values) for the members' parameters."""
    saved = {}
    for m in members:
        param = layers[m.layer]._parameters[m.attr]
        saved.setdefault((m.layer, m.attr), (param, np.array(param.numpy(), copy=True)))
    return saved


class GroupMask:
    """Zeroes the consumer input slices of chosen units of one group, and undoes it."""

    def __init__(self, group: ChannelGroup, layers: Mapping[str, paddle.nn.Layer]):
        self.members = [m for m in group.members if m.role == IN]
        self.params = saved_params(self.members, layers)

    def slices(self, units: np.ndarray) -> Dict[Tuple[str, str], List[Tuple[int, np.ndarray]]]:
        """(layer, attr) -> [(axis, indices)] zeroed for ``units``; a member cut per
        block (a grouped conv's input columns, see
        :class:`~slim_callbacks.tracing.groups.Member`) gives its flat indices with
        the blocks: ``(axis, indices, along, blocks)``."""
        out: Dict[Tuple[str, str], list] = {}
        for m in self.members:
            hit = m.indices[np.isin(m.units, units)]
            if hit.size:
                entry = (m.axis, hit, m.along, m.blocks) if m.blocks else (m.axis, hit)
                out.setdefault((m.layer, m.attr), []).append(entry)
        return out

    @contextlib.contextmanager
    def applied(self, units: np.ndarray) -> Iterator[None]:
        touched = []
        try:
            for key, cuts in self.slices(units).items():
                param, saved = self.params[key]
                array = saved.copy()
                for cut in cuts:
                    zero_entries(array, *cut)
                touched.append(key)
                set_storage(param, array)
            yield
        finally:
            for key in touched:
                param, saved = self.params[key]
                set_storage(param, saved)


def zero_entries(array: np.ndarray, axis: int, hit: np.ndarray, along: int = 0, blocks: int = 0) -> None:
    """Zeroes entries ``hit`` of ``axis``; with ``blocks``, flat entry ``i`` only in block
    ``i // size`` of axis ``along`` (``size``: the length of ``axis``)."""
    index = [slice(None)] * array.ndim
    if not blocks:
        index[axis] = hit
        array[tuple(index)] = 0
        return
    size, rows = array.shape[axis], array.shape[along] // blocks
    for flat in hit.tolist():
        block, index[axis] = divmod(int(flat), size)
        index[along] = slice(block * rows, (block + 1) * rows)
        array[tuple(index)] = 0


class GroupPrune:
    """Removes chosen units of one group physically, in place, and puts them back."""

    def __init__(self, group: ChannelGroup, layers: Mapping[str, paddle.nn.Layer]):
        self.group, self.layers = group, layers
        self.saved = saved_params(group.members, layers)
        self.attrs = {name: channel_attributes(layers[name]) for name in group.layers()}

    def cuts(self, units: np.ndarray) -> Dict[Tuple[str, str], dict]:
        """The same cuts :func:`plan_pruning` gives for these units."""
        removed = add_removed({}, self.group.members, units)
        return {key: cut.surgery() for key, cut in cuts_of(removed, lambda k: self.saved[k][1].shape).items()}

    def sizes(self, units: np.ndarray) -> Dict[Tuple[str, str], int]:
        """(layer, attribute) -> its value with ``units`` gone (``head_dim``, a grouped
        conv's ``_groups`` when whole groups go)."""
        return {(s.layer, s.attr): getattr(self.layers[s.layer], s.attr) - int(np.isin(s.units, units).sum())
                for s in self.group.sizes}

    @contextlib.contextmanager
    def applied(self, units: np.ndarray) -> Iterator[None]:
        sizes = self.sizes(units)
        before = {key: getattr(self.layers[key[0]], key[1]) for key in sizes}
        try:
            for (name, attr), value in sizes.items():
                setattr(self.layers[name], attr, value)
            apply_cuts(dict(self.layers), self.cuts(units))
            yield
        finally:
            for param, saved in self.saved.values():
                set_storage(param, saved)
            for (name, attr), value in before.items():
                setattr(self.layers[name], attr, value)
            for name, attrs in self.attrs.items():
                for key, value in attrs.items():
                    setattr(self.layers[name], key, value)
