"""Coupled-channel groups: the result of tracing a network.

Tracing (see :mod:`slim_callbacks.tracing.tracer`) gives every output channel of every
producer layer (a conv that is not depthwise, or a Linear) an integer *atom*. Ops that
tie channels together (residual adds, squeeze-excitation multiplies, channel shuffles,
the groups of a grouped conv) union atoms; the resulting classes are *units*: channels that can only be removed
together. Units whose atoms come from the same producer layers form a
:class:`ChannelGroup`, the thing a pruning ratio applies to.

Every parameter slice that belongs to a unit is a :class:`Member`: the producer's
output rows, the BatchNorm entries and depthwise filters that follow it, and the input
columns of every consumer.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

OUT, IN, CHANNEL = "out", "in", "channel"  # roles of a member


@dataclasses.dataclass(frozen=True)
class Member:
    """Slices of one parameter that belong to the units of a group.

    Attributes:
        layer: structural sublayer name, e.g. ``"features.3.conv"``.
        attr: parameter attribute on that layer: ``weight``, ``bias``, ``_mean``, ...
        axis: axis of the parameter that is sliced.
        role: ``out`` (producer rows), ``in`` (consumer columns) or ``channel``
            (per-channel parameters such as BatchNorm or depthwise filters).
        units: unit index (within the group) of each entry.
        indices: index along ``axis`` of each entry; same length as ``units``.
        blocks: 0, or the number of blocks of axis ``along`` that keep their own
            entries of ``axis`` (a grouped conv's groups, each keeping its own input
            columns): ``indices`` are then flat, entry ``i`` is position
            ``i % axis length`` in block ``i // axis length``.
        along: the axis whose blocks are meant (with ``blocks``).
    """

    layer: str
    attr: str
    axis: int
    role: str
    units: np.ndarray
    indices: np.ndarray
    blocks: int = 0
    along: int = 0


@dataclasses.dataclass(frozen=True)
class SizeMember:
    """An ``int`` attribute of a layer that sizes the group's channels in a reshape
    (``self.head_dim``); pruning sets it to the number of ``units`` that stay."""

    layer: str
    attr: str
    units: np.ndarray


@dataclasses.dataclass
class ChannelGroup:
    """Channels coupled across layers; pruning removes whole units of it.

    Attributes:
        producers: names of the layers whose output channels make up the group.
        num_units: channels that can be removed, one unit each.
        members: every parameter slice that follows the units.
        blocked: why the group may not be pruned, or ``""`` if it may.
        blocked_by: where it is blocked: (op or layer type, structural name of the
            layer it ran in), e.g. ``("matmul", "blocks.0.attn")``; ``("network
            output", "")`` for channels that reach an output.
        approximate: why removing even dead channels of the group changes the
            outputs (a LayerNorm over them), or ``""`` if removal is exact.
        sizes: layer attributes that count some of the group's units.
        segments: None, or the segment of each unit: the same number of units must go
            from every segment (the groups of a grouped conv pruned with
            ``grouped_conv: channels``).
    """

    producers: Tuple[str, ...]
    num_units: int
    members: List[Member]
    blocked: str = ""
    blocked_by: Tuple[str, str] = ("", "")
    approximate: str = ""
    sizes: List[SizeMember] = dataclasses.field(default_factory=list)
    segments: Optional[np.ndarray] = None

    @property
    def name(self) -> str:
        """The first producer's name, used in logs and reports."""
        return self.producers[0]

    @property
    def prunable(self) -> bool:
        return not self.blocked and self.num_units > 1

    def layers(self) -> List[str]:
        """Every layer that owns a member, in first-seen order."""
        return list(dict.fromkeys(m.layer for m in self.members))


class UnionFind:
    """Union-find over atom ids ``1..n`` (0 means "no channel")."""

    def __init__(self):
        self.parent: List[int] = [0]

    def add(self, count: int) -> int:
        """Adds ``count`` new atoms and returns the first new id."""
        first = len(self.parent)
        self.parent.extend(range(first, first + count))
        return first

    def find(self, atom: int) -> int:
        root = atom
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[atom] != root:
            self.parent[atom], atom = root, self.parent[atom]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def roots(self) -> np.ndarray:
        """Root of every atom, as an array indexed by atom id."""
        return np.array([self.find(a) for a in range(len(self.parent))], dtype=np.int64)


@dataclasses.dataclass
class MemberRecord:
    """A member as seen during tracing: slices keyed by atom rather than unit."""

    layer: str
    attr: str
    axis: int
    role: str
    atoms: np.ndarray
    indices: np.ndarray
    blocks: int = 0
    along: int = 0


def build_groups(
    uf: UnionFind,
    atom_layer: np.ndarray,
    layer_order: Dict[str, int],
    layer_names: List[str],
    records: List[MemberRecord],
    blocked: Dict[int, str],
    block_sites: Optional[Dict[int, Tuple[str, str]]] = None,
    approximations: Optional[Dict[int, str]] = None,
    sizes: Optional[Dict[Tuple[str, str], np.ndarray]] = None,
    segments: Optional[Dict[int, int]] = None,
) -> List[ChannelGroup]:
    """Turns atoms, unions and member records into channel groups.

    Args:
        uf: the unions made while tracing.
        atom_layer: index into ``layer_names`` of the producer of each atom.
        layer_order: position of each layer in ``named_sublayers()`` order.
        layer_names: producer names indexed by ``atom_layer``.
        records: parameter slices keyed by atom.
        blocked: atoms that must not be pruned, with the reason.
        block_sites: (op, layer) where each blocked atom was blocked.
        approximations: atoms whose removal is not exact, with the reason.
        sizes: (layer, attribute) -> atoms whose units it counts.
        segments: unit root -> segment, for groups whose units go in equal numbers
            from each segment (every unit of such a group has one).

    Returns:
        Groups ordered by their first producer's position in the network.
    """
    roots = uf.roots()
    real = roots[1:]
    unit_roots = np.unique(real)
    producers_of: Dict[int, set] = {int(r): set() for r in unit_roots}
    for atom in range(1, len(roots)):
        producers_of[int(roots[atom])].add(layer_names[atom_layer[atom]])
    block_sites = block_sites or {}
    reason_of: Dict[int, Tuple[str, Tuple[str, str]]] = {}
    for atom, reason in blocked.items():
        reason_of.setdefault(int(roots[atom]), (reason, block_sites.get(atom, ("", ""))))

    approx_of: Dict[int, str] = {}
    for atom, reason in (approximations or {}).items():
        approx_of.setdefault(int(roots[atom]), reason)

    key_of = {
        r: tuple(sorted(p, key=lambda n: layer_order.get(n, 0)))
        for r, p in producers_of.items()
    }
    keys = sorted(set(key_of.values()), key=lambda k: [layer_order.get(n, 0) for n in k])
    group_roots: Dict[tuple, List[int]] = {k: [] for k in keys}
    for r in sorted(key_of):
        group_roots[key_of[r]].append(r)

    unit_index = {}  # root -> (group idx, unit idx)
    for gi, key in enumerate(keys):
        for ui, r in enumerate(group_roots[key]):
            unit_index[r] = (gi, ui)
    lookup = np.full(len(roots), -1, dtype=np.int64)
    group_of = np.full(len(roots), -1, dtype=np.int64)
    for r, (gi, ui) in unit_index.items():
        lookup[r], group_of[r] = ui, gi

    members: List[List[Member]] = [[] for _ in keys]
    for rec in records:
        rec_roots = roots[rec.atoms]
        for gi in np.unique(group_of[rec_roots]):
            sel = group_of[rec_roots] == gi
            members[gi].append(
                Member(rec.layer, rec.attr, rec.axis, rec.role,
                       lookup[rec_roots[sel]], rec.indices[sel], rec.blocks, rec.along)
            )
    size_members: List[List[SizeMember]] = [[] for _ in keys]
    for (layer, attr), atoms in (sizes or {}).items():
        size_roots = np.unique(roots[atoms])
        gis = np.unique(group_of[size_roots])
        if len(gis) > 1:  # counts channels of several groups: they must all stay
            for r in size_roots:
                reason_of.setdefault(int(r), (f"is sized together with other groups by "
                                              f"{layer}.{attr}", ("reshape", layer)))
            continue
        size_members[gis[0]].append(SizeMember(layer, attr, lookup[size_roots]))
    groups = []
    for gi, key in enumerate(keys):
        reasons = [reason_of[r] for r in group_roots[key] if r in reason_of]
        reason, site = reasons[0] if reasons else ("", ("", ""))
        approx = next((approx_of[r] for r in group_roots[key] if r in approx_of), "")
        segs = [(segments or {}).get(r) for r in group_roots[key]]
        segs = None if None in segs else np.array(segs, dtype=np.int64)
        groups.append(ChannelGroup(key, len(group_roots[key]), members[gi], reason, site, approx,
                                   size_members[gi], segs))
    return groups
