"""PruningPlan: what was removed, replayable on a fresh copy of the original network.

A plan lists, per parameter (structural layer name + attribute), its shape before
pruning and the indices kept along each pruned axis. It is what a pruned checkpoint
needs to be reloaded: build the original network, ``plan.apply(net)``, load weights.

    >>> plan = PruningPlan.from_dict({"params": {"fc": {"weight": {
    ...     "shape": [4, 2], "kept": {"0": [0, 3]}}}}})
    >>> plan.params[("fc", "weight")].kept
    {0: [0, 3]}

A grouped conv pruned with ``structure={"grouped_conv": "channels"}`` keeps different
input columns in each group: its weight's cut lists them per block of output rows
(``blocks``, see :class:`ParamCut`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.example_inputs import as_inputs, given_inputs
from slim_callbacks.core.paddle_utils import layer_table, preserved_state, reset_static_programs, unwrap
from slim_callbacks.engine.surgery import Blocks, apply_cuts, rollback_on_error, set_storage, take

#: the modes a pruned network's verifying forward passes run in
MODES = ("eval", "train")


@dataclasses.dataclass
class ParamCut:
    """One parameter's shape before pruning and the indices kept per axis.

    Attributes:
        shape: the shape before.
        kept: axis -> indices kept.
        blocks: axis -> (``along``, one list of kept indices per block of axis
            ``along``): each block of rows keeps its own entries of ``axis`` (a grouped
            conv's groups keep different input columns), the same number in each.

    >>> ParamCut([4, 2, 3, 3], {0: [0, 3]}, {1: (0, [[0], [1]])}).shape_after
    [2, 1, 3, 3]
    """

    shape: List[int]
    kept: Dict[int, List[int]]
    blocks: Dict[int, Tuple[int, List[List[int]]]] = dataclasses.field(default_factory=dict)

    @property
    def shape_after(self) -> List[int]:
        shape = [len(self.kept[a]) if a in self.kept else n for a, n in enumerate(self.shape)]
        for axis, (_, lists) in self.blocks.items():
            shape[axis] = len(lists[0])
        return shape

    def surgery(self) -> dict:
        """The cut as :func:`~slim_callbacks.engine.surgery.apply_cuts` takes it."""
        cut = {a: np.asarray(i, dtype=np.int64) for a, i in self.kept.items()}
        cut.update({a: Blocks(along, np.asarray(lists, dtype=np.int64))
                    for a, (along, lists) in self.blocks.items()})
        return cut

    def rows_kept(self, axis: int, along: int) -> List[List[int]]:
        """Per index of axis ``along`` (before), the indices of ``axis`` it keeps."""
        if axis in self.blocks:
            _, lists = self.blocks[axis]
            size = self.shape[along] // len(lists)
            return [list(lists[r // size]) for r in range(self.shape[along])]
        return [list(self.kept.get(axis, range(self.shape[axis])))] * self.shape[along]


def chain_blocks(first: ParamCut, later: ParamCut, axis: int, along: int):
    """``axis`` cut by ``first`` then ``later`` where either keeps entries per block of
    ``along``: ``(kept, blocks)`` for the chained :class:`ParamCut` (the fewest blocks
    that describe it; one block is a plain ``kept``)."""
    rows = first.rows_kept(axis, along)
    later_rows = later.rows_kept(axis, along)
    survivors = list(first.kept.get(along, range(first.shape[along])))
    final = {r: [rows[r][x] for x in later_rows[i]] for i, r in enumerate(survivors)}
    count = first.shape[along]
    for n in (d for d in range(1, count + 1) if count % d == 0):
        size = count // n
        lists = [[final[r] for r in range(j * size, (j + 1) * size) if r in final] for j in range(n)]
        if all(all(x == block[0] for x in block) for block in lists if block):
            fill = next(block[0] for block in lists if block)
            lists = [block[0] if block else fill for block in lists]
            return ({axis: lists[0]}, {}) if n == 1 else ({}, {axis: (along, lists)})
    raise AssertionError("one block per row always describes the cut")


@dataclasses.dataclass
class PruningPlan:
    """Kept indices per parameter, plus a per-group summary.

    Attributes:
        params: (layer, attr) -> :class:`ParamCut`.
        groups: one dict per pruned group: ``name``, ``producers``, ``before``,
            ``after`` (channel counts) and ``criterion``.
        folds: BN-shift folds made when the plan was applied with ``fold_bn_shift``
            (see :mod:`slim_callbacks.engine.shift_fold`): ``consumer``, ``into``,
            ``channels``, ``exact``. Not replayed: they live in the saved weights.
        fold_skipped: consumers whose removed channels were not folded, with the reason.
        attrs: (layer, attribute) -> (value before, after) for the layer attributes
            that size pruned channels in the code (``self.head_dim``).
    """

    params: Dict[Tuple[str, str], ParamCut] = dataclasses.field(default_factory=dict)
    groups: List[dict] = dataclasses.field(default_factory=list)
    folds: List[dict] = dataclasses.field(default_factory=list, compare=False)
    fold_skipped: List[dict] = dataclasses.field(default_factory=list, compare=False)
    attrs: Dict[Tuple[str, str], Tuple[int, int]] = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.groups)

    def layer_widths(self) -> Dict[str, Tuple[int, int]]:
        """Producer name -> (channels before, after) for every pruned group."""
        return {p: (g["before"], g["after"]) for g in self.groups for p in g["producers"]}

    def check(self, network: paddle.nn.Layer) -> None:
        """Raises SlimError unless every parameter exists with its 'before' shape."""
        layers = layer_table(network)
        for (name, attr), cut in self.params.items():
            param = layers.get(name)._parameters.get(attr) if name in layers else None
            if param is None:
                raise SlimError(f"plan names parameter {name}.{attr}, which the network "
                                f"does not have: was it built from the same architecture?")
            if list(param.shape) != cut.shape:
                raise SlimError(f"plan expects {name}.{attr} of shape {cut.shape}, the "
                                f"network has {list(param.shape)}: apply plans in order, "
                                f"to the network they were made for")
        for (name, attr), (before, _) in self.attrs.items():
            value = getattr(layers[name], attr, None) if name in layers else None
            if value != before:
                raise SlimError(f"plan expects {name}.{attr} = {before}, the network has "
                                f"{value}: apply plans in order, to the network they were "
                                f"made for")

    def apply(self, network: paddle.nn.Layer, optimizer=None,
              input_shape: Optional[Sequence[int]] = None, *,
              example_inputs=None, modes: Sequence[str] = MODES) -> "PruningPlan":
        """Shrinks ``network`` (and ``optimizer`` state) as this plan says.

        Args:
            network: a network with the plan's 'before' shapes.
            optimizer: optimizer whose accumulators must follow, if any.
            input_shape: the shorthand of ``example_inputs`` for one float32 input.
            example_inputs: if given (inputs of any structure, see
                :mod:`slim_callbacks.core.example_inputs`), a forward pass on them must
                succeed afterwards in eval and in train mode, or every change (the
                attributes that forward set too) is rolled back and SlimError raised.
            modes: the modes of that forward pass (``("eval",)`` when a train-mode
                forward needs targets that the inputs do not hold).
        """
        inputs = (None if example_inputs is None and input_shape is None
                  else given_inputs(example_inputs, input_shape))
        self.check(network)
        net = unwrap(network)
        layers = layer_table(net)
        cuts = {key: cut.surgery() for key, cut in self.params.items()}
        try:
            with rollback_on_error(layers, cuts) as saved, attributes_set(layers, self.attrs):
                apply_cuts(layers, cuts, optimizer, saved)
                if inputs is not None:
                    verify_forward(net, inputs, modes)
        except SlimError:
            raise
        except Exception as err:
            raise SlimError(f"the pruned network failed a forward pass, so nothing was "
                            f"changed: {type(err).__name__}: {err}") from err
        reset_static_programs(net)  # to_static forwards are converted again for the new shapes
        return self

    def cut_state(self, state) -> List[str]:
        """Slices, in place, every tensor of ``state`` (a dict keyed like the network's
        state dict, ``"<layer>.<attr>"``) that has its parameter's shape before this plan,
        exactly as the parameter was sliced: a copy of the weights kept beside the network
        (an EMA's, a teacher's). Tensors already cut (the parameter itself) are left alone.
        Returns the keys cut.

        Examples:
            >>> plan = PruningPlan.from_dict({"params": {"fc": {"weight": {
            ...     "shape": [3, 2], "kept": {"0": [0, 2]}}}}})
            >>> ema = {"fc.weight": paddle.to_tensor([[1., 1.], [2., 2.], [3., 3.]])}
            >>> plan.cut_state(ema), ema["fc.weight"].numpy()[:, 0].tolist()
            (['fc.weight'], [1.0, 3.0])
        """
        done = []
        for (name, attr), cut in self.params.items():
            key = f"{name}.{attr}" if name else attr
            tensor = state.get(key)
            if tensor is not None and list(tensor.shape) == cut.shape:
                set_storage(tensor, take(tensor.numpy(), cut.surgery()))
                done.append(key)
        return done

    def then(self, later: "PruningPlan") -> "PruningPlan":
        """One plan equal to applying ``self`` and then ``later``."""
        params = dict(self.params)
        for key, cut in later.params.items():
            first = params.get(key)
            if first is None:
                params[key] = cut
                continue
            if first.shape_after != cut.shape:
                raise SlimError(f"plans do not chain at {key[0]}.{key[1]}: "
                                f"{first.shape_after} then {cut.shape}")
            kept, blocks = dict(first.kept), dict(first.blocks)
            for axis, index in cut.kept.items():
                if axis not in first.blocks:
                    base = kept.get(axis, list(range(first.shape[axis])))
                    kept[axis] = [base[i] for i in index]
            for axis in set(first.blocks) | set(cut.blocks):
                along = (first.blocks.get(axis) or cut.blocks[axis])[0]
                kept.pop(axis, None)
                blocks.pop(axis, None)
                plain, block = chain_blocks(first, cut, axis, along)
                kept.update(plain)
                blocks.update(block)
            params[key] = ParamCut(first.shape, kept, blocks)
        attrs = dict(self.attrs)
        for key, (before, after) in later.attrs.items():
            attrs[key] = (attrs.get(key, (before, before))[0], after)
        return PruningPlan(params, self.groups + later.groups, attrs=attrs)

    # -- serialization ---------------------------------------------------------
    def to_dict(self) -> dict:
        params: Dict[str, dict] = {}
        for (name, attr), cut in self.params.items():
            entry = {"shape": cut.shape, "kept": {str(a): list(map(int, i)) for a, i in cut.kept.items()}}
            if cut.blocks:
                entry["blocks"] = {str(a): {"along": int(along), "kept": [list(map(int, k)) for k in lists]}
                                   for a, (along, lists) in cut.blocks.items()}
            params.setdefault(name, {})[attr] = entry
        out = {"format": "slim_callbacks.PruningPlan/1", "params": params, "groups": self.groups}
        if self.attrs:
            out["attrs"] = {f"{name}:{attr}": [before, after]
                            for (name, attr), (before, after) in self.attrs.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "PruningPlan":
        try:
            params = {(name, attr): ParamCut(list(c["shape"]), {int(a): list(i) for a, i in c["kept"].items()},
                                             {int(a): (int(b["along"]), [list(k) for k in b["kept"]])
                                              for a, b in c.get("blocks", {}).items()})
                      for name, attrs in data["params"].items() for attr, c in attrs.items()}
            attrs = {tuple(key.rsplit(":", 1)): (int(v[0]), int(v[1]))
                     for key, v in data.get("attrs", {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            raise SlimError(f"not a pruning plan: {type(err).__name__}: {err}") from err
        return cls(params, list(data.get("groups", [])), attrs=attrs)

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: str) -> "PruningPlan":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


@contextlib.contextmanager
def attributes_set(layers: Dict[str, paddle.nn.Layer], attrs: Dict[Tuple[str, str], Tuple[int, int]]):
    """Sets each (layer, attribute) to its 'after' value; back to 'before' if the block
    raises."""
    for (name, attr), (_, after) in attrs.items():
        setattr(layers[name], attr, after)
    try:
        yield
    except BaseException:
        for (name, attr), (before, _) in attrs.items():
            setattr(layers[name], attr, before)
        raise


def verify_forward(network: paddle.nn.Layer, example_inputs, modes: Sequence[str] = MODES) -> None:
    """One forward pass on ``example_inputs`` (any structure; a shape is one float32
    input of zeros) in eval mode and one in train mode (where auxiliary heads run), or
    in the ``modes`` given.
    Modes, BatchNorm statistics, attributes and the RNG state are restored.

    Raises:
        SlimError: naming the mode whose forward pass failed.
    """
    inputs = as_inputs(example_inputs)
    with preserved_state(network), paddle.no_grad():
        for mode in modes:
            getattr(network, mode)()
            try:
                inputs.call(network)
            except Exception as err:
                raise SlimError(f"the pruned network failed a forward pass in {mode} mode, "
                                f"so nothing was changed: {inputs.rejected(err, mode)}") from err


# (layer, attr) -> (axis, along, blocks) -> removed indices (flat over the blocks if any)
Removed = Dict[Tuple[str, str], Dict[Tuple[int, int, int], set]]


def add_removed(removed: Removed, members, units: np.ndarray) -> Removed:
    """Adds the entries of ``members`` (of one group) that belong to ``units``."""
    for m in members:
        hit = m.indices[np.isin(m.units, units)]
        removed.setdefault((m.layer, m.attr), {}).setdefault(
            (m.axis, m.along, m.blocks), set()).update(hit.tolist())
    return removed


def cuts_of(removed: Removed, shape_of) -> Dict[Tuple[str, str], ParamCut]:
    """The :class:`ParamCut` of every parameter in ``removed``; ``shape_of(key)`` gives
    its shape. An entry flat over ``blocks`` blocks is position ``i % size`` of block
    ``i // size`` (``size``: the axis length), kept apart per block.

    >>> cuts_of({("g", "weight"): {(1, 0, 2): {1, 2}}}, lambda key: [4, 2, 3, 3])
    {('g', 'weight'): ParamCut(shape=[4, 2, 3, 3], kept={}, blocks={1: (0, [[0], [1]])})}
    """
    cuts = {}
    for key, axes in removed.items():
        shape = list(shape_of(key))
        kept, blocks = {}, {}
        for (axis, along, count), gone in axes.items():
            size = shape[axis]
            if count:
                blocks[axis] = (along, [[p for p in range(size) if j * size + p not in gone]
                                        for j in range(count)])
            else:
                kept[axis] = [i for i in range(size) if i not in gone]
        cuts[key] = ParamCut(shape, kept, blocks)
    return cuts
