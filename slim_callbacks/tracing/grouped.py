"""Grouped convs (``1 < groups < C_in``) traced with ``grouped_conv: channels`` or
``groups``: which channels one unit spans, settled once the whole network is traced.

A grouped conv's weight ``[C_out, C_in / groups, k...]`` holds ``C_in / groups``
input columns per group, so every group must keep the same width. The
:class:`~slim_callbacks.tracing.structure.Structure` field ``grouped_conv`` says how:

- ``positions`` (default, :func:`group_positions`):
  a unit is one position of every group;
- ``channels``: a unit is one channel, but each group (a *segment* of the channel
  group) loses the same number of them, each group its own by score; the weight's
  input axis is then cut per group (a
  :class:`~slim_callbacks.engine.surgery.Blocks` cut);
- ``groups``: a unit is a whole group, its input channels (the producer's rows) and
  its output channels together; ``groups`` shrinks with them.

Whether a conv's choice can hold depends on what its channels are coupled to
elsewhere in the network, so :func:`settle` runs after the trace: a side whose
channels are shared with another grouped conv that splits them differently, mixed
with other groups' channels (a concat), or with channels that cannot be pruned falls
back to ``positions`` (one log line each), which is always right.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional, Tuple

import numpy as np

from slim_callbacks.tracing.groups import IN, OUT

logger = logging.getLogger(__name__)

POSITIONS, CHANNELS, GROUPS = "positions", "channels", "groups"


@dataclasses.dataclass
class GroupedConv:
    """A grouped conv seen in the trace, its per-group axis not recorded yet.

    Attributes:
        name: structural layer name.
        groups: its ``_groups``.
        in_atoms: the atom of each input channel (0: no channel).
        out_atoms: the atom of each output channel.
        transposed: weight ``[C_in, C_out / groups, k...]`` (the output side is the
            per-group axis) rather than ``[C_out, C_in / groups, k...]``.
        mode: the ``grouped_conv`` structure asked for.
    """

    name: str
    groups: int
    in_atoms: np.ndarray
    out_atoms: np.ndarray
    transposed: bool
    mode: str

    def atoms(self, side: str) -> np.ndarray:
        return self.in_atoms if side == "in" else self.out_atoms

    @property
    def grouped_side(self) -> str:
        """The side whose channels the weight holds ``C / groups`` of (axis 1)."""
        return "out" if self.transposed else "in"


Side = Tuple[int, str]  # (index into the convs, "in" or "out")


def settle(tr, convs: List[GroupedConv]) -> Tuple[Dict[int, int], List[str]]:
    """Chooses each side's mode (falling back to ``positions`` where the asked one
    cannot hold), makes its unions and records its weight's per-group axis.

    Returns:
        Unit root -> segment for every unit of a ``channels`` side, and one line per
        fallback (also logged at INFO).
    """
    fallbacks: List[str] = []
    modes = {}
    for i, conv in enumerate(convs):
        for side in ("in", "out"):
            modes[(i, side)] = conv.mode
        if conv.mode == CHANNELS and conv.transposed:  # its rows are not cut per group
            modes[(i, "out")] = POSITIONS
    names = [conv.name for conv in convs]
    for i, conv in enumerate(convs):
        if names.count(conv.name) > 1:  # called on other channels too (another pass, a loop)
            modes[(i, "in")] = modes[(i, "out")] = POSITIONS
            fallbacks.append(f"grouped conv {conv.name} (groups={conv.groups}) runs on different "
                             f"channels in different calls; pruned by positions")
            logger.info("%s", fallbacks[-1])
    base = list(tr.uf.parent)
    while True:
        tr.uf.parent = list(base)
        for i, conv in enumerate(convs):
            unite(tr, conv, modes[(i, "in")], modes[(i, "out")])
        bad, segments = conflicts(tr, convs, modes)
        if not bad:
            break
        for (i, side), why in bad.items():
            conv, sides = convs[i], [side]
            if modes[(i, side)] == GROUPS:
                sides = ["in", "out"]
            for s in sides:
                modes[(i, s)] = POSITIONS
            fallbacks.append(f"grouped conv {conv.name} (groups={conv.groups}): {why}; its "
                             f"{' and '.join(sides)} channels are pruned by positions instead "
                             f"of {conv.mode}")
            logger.info("%s", fallbacks[-1])
    for i, conv in enumerate(convs):
        record(tr, conv, modes[(i, conv.grouped_side)])
    return segments, fallbacks


def group_positions(tr, name: str, groups: int, atoms: np.ndarray) -> np.ndarray:
    """Couples the channels at the same position of every group of a grouped conv.

    Its weight holds ``C / groups`` channels per group on one axis, shared by every
    group, so a position can only go from all groups at once: then each group keeps
    the same width and ``groups`` stays. A unit is one position (``groups``
    channels), scored by the sum over them. A position that holds a channel in some
    groups and none (the input, a constant) in others is blocked.

    Returns:
        One atom per position (``C / groups`` entries; 0: no channel there).
    """
    grid = atoms.reshape(groups, -1)
    has = grid > 0
    mixed = has.any(axis=0) & ~has.all(axis=0)
    if mixed.any():
        tr.block(grid[:, mixed], f"meets channels that cannot be pruned at the same positions "
                                 f"of the groups of grouped conv {name} (groups={groups})")
    for column in grid.T:
        tr.union_all(column[column > 0])
    return grid.max(axis=0)


def unite(tr, conv: GroupedConv, in_mode: str, out_mode: str) -> None:
    """The unions of one conv's modes: positions across groups, or whole groups."""
    for side, mode in (("in", in_mode), ("out", out_mode)):
        if mode == POSITIONS:
            group_positions(tr, conv.name, conv.groups, conv.atoms(side))
    if in_mode == GROUPS:
        both = np.concatenate([conv.in_atoms.reshape(conv.groups, -1),
                               conv.out_atoms.reshape(conv.groups, -1)], axis=1)
        for row in both:
            tr.union_all(row[row > 0])


def conflicts(tr, convs: List[GroupedConv], modes: Dict[Side, str]):
    """Sides whose mode cannot hold, with why; and the segments of those that can."""
    roots = tr.uf.roots()
    atom_layer = np.asarray(tr.atom_layer)
    producers: Dict[int, set] = {}
    for atom in range(1, len(roots)):
        producers.setdefault(int(roots[atom]), set()).add(int(atom_layer[atom]))
    key_of = {r: frozenset(p) for r, p in producers.items()}
    roots_of: Dict[frozenset, set] = {}
    for r, key in key_of.items():
        roots_of.setdefault(key, set()).add(r)
    bad: Dict[Side, str] = {}
    segments_of: Dict[frozenset, Dict[int, int]] = {}
    for i, conv in enumerate(convs):
        if modes[(i, "in")] == GROUPS:
            why = whole_groups_conflict(conv, roots, key_of)
            if why:
                bad[(i, "in")] = why
        for side in ("in", "out"):
            if modes[(i, side)] != CHANNELS:
                continue
            why, key, seg = segments_conflict(conv.atoms(side), conv.groups, roots, key_of, roots_of)
            if not why and key in segments_of and not same_partition(segments_of[key], seg):
                why = "is split into groups differently by another grouped conv"
            if why:
                bad[(i, side)] = f"its {side}put {why}"
            else:
                segments_of.setdefault(key, seg)
    segments: Dict[int, int] = {}
    for seg in segments_of.values():
        segments.update(seg)
    return bad, segments


def whole_groups_conflict(conv: GroupedConv, roots: np.ndarray, key_of) -> str:
    """Why the groups of ``conv`` cannot go whole ("" if they can): each must be a unit
    of its own, all in one channel group (``groups`` counts them)."""
    if (conv.in_atoms == 0).any():
        return "its input holds channels that cannot be pruned (the input, a constant)"
    first = roots[conv.out_atoms.reshape(conv.groups, -1)[:, 0]].tolist()
    if len(set(first)) < conv.groups:
        return "its groups are coupled to each other (by a grouped conv with other groups, a shuffle)"
    if len({key_of[r] for r in first}) > 1:
        return "its groups hold channels of several channel groups (a concat)"
    return ""


def segments_conflict(atoms: np.ndarray, groups: int, roots: np.ndarray, key_of, roots_of):
    """``(why, group key, root -> segment)``; ``why`` is "" if each group of ``atoms``
    can lose its own channels: one unit per channel, all of one channel group, which
    holds no other channel."""
    if (atoms == 0).any():
        return "holds channels that cannot be pruned (the input, a constant)", None, None
    r = roots[atoms]
    if len(np.unique(r)) < len(r):
        return "has channels that are coupled to each other", None, None
    keys = {key_of[int(x)] for x in r}
    if len(keys) > 1:
        return "mixes channels of several channel groups (a concat)", None, None
    key = keys.pop()
    if roots_of[key] != set(r.tolist()):
        return "shares its channel group with channels it does not read", None, None
    per = len(atoms) // groups
    return "", key, {int(x): pos // per for pos, x in enumerate(r)}


def same_partition(a: Dict[int, int], b: Dict[int, int]) -> bool:
    """True if two root -> segment maps split the same roots into the same sets."""
    pairs = {(a[r], b.get(r)) for r in a}
    return a.keys() == b.keys() and len(pairs) == len(set(a.values())) == len(set(b.values()))


def record(tr, conv: GroupedConv, mode: str) -> None:
    """Records the weight's per-group axis (1) for ``mode``, and ``_groups`` as a size
    that counts the units when whole groups go."""
    atoms = conv.atoms(conv.grouped_side)
    role = OUT if conv.transposed else IN
    if mode == POSITIONS:
        tr.record(conv.name, "weight", 1, role, atoms.reshape(conv.groups, -1).max(axis=0))
    elif mode == CHANNELS:
        tr.record(conv.name, "weight", 1, role, atoms, blocks=conv.groups, along=0)
    else:  # whole groups: axis 1 stays, the number of groups follows the units
        tr.size_follows((conv.name, "_groups"), conv.out_atoms.reshape(conv.groups, -1)[:, 0],
                        conv.groups)


def unique_convs(convs: List[GroupedConv]) -> List[GroupedConv]:
    """One entry per conv and channels (both traced passes see most convs)."""
    seen: Dict[tuple, GroupedConv] = {}
    for conv in convs:
        seen.setdefault((conv.name, conv.in_atoms.tobytes(), conv.out_atoms.tobytes()), conv)
    return list(seen.values())


def grouped_mode(tr) -> Optional[str]:
    """The ``grouped_conv`` structure of the trace, or None for the default positions."""
    mode = tr.structure.grouped_conv
    return None if mode == POSITIONS else mode
