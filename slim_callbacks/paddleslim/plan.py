"""PaddleSlim's ``PruningPlan`` and ``PruningMask``: masks per parameter name.

A plan made by a pruner wraps the engine's
:class:`~slim_callbacks.engine.plan.PruningPlan` (kept indices per layer parameter)
and shows it as PaddleSlim does: ``plan.masks`` is ``{parameter name: [PruningMask]}``,
a mask holding 1 for every kept entry of axis ``dims``. ``apply`` removes the masked
entries (with the optimizer state) or, ``lazy=True``, zeroes them; ``restore`` puts
back, bit for bit, what that ``apply`` changed.

Examples:
    >>> import numpy as np
    >>> plan = PruningPlan()
    >>> plan.add("conv2d_0.w_0", PruningMask(0, np.array([1, 0, 1, 1]), 0.25))
    >>> plan.add("conv2d_0.w_0", PruningMask(0, np.array([1, 1, 0, 1]), 0.25))
    >>> plan.masks["conv2d_0.w_0"][0].mask.tolist(), plan.contains("conv2d_0.w_0", 0)
    ([1, 0, 0, 1], True)
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
import paddle

from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.engine.plan import ParamCut
from slim_callbacks.engine.plan import PruningPlan as EnginePlan
from slim_callbacks.engine.surgery import set_storage
from slim_callbacks.pruning.snapshot import Snapshot


class PruningMask:
    """The entries of one axis (``dims``) of a parameter that stay (1) or go (0)."""

    def __init__(self, dims: int, mask, ratio: float, op=None):
        if not isinstance(dims, int) or isinstance(dims, bool):
            raise ConfigError("dims", dims, "an int axis")
        self._dims, self._mask, self._pruned_ratio, self._op = dims, np.asarray(mask), ratio, op

    dims = property(lambda self: self._dims)

    @property
    def mask(self) -> np.ndarray:
        return self._mask

    @mask.setter
    def mask(self, value) -> None:
        self._mask = np.asarray(value)

    def __str__(self) -> str:
        return f"{self._pruned_ratio}\t{self._dims}"


def parameter_owners(model: paddle.nn.Layer) -> Dict[str, tuple]:
    """Parameter name -> (structural layer name, attribute)."""
    return {p.name: (name, attr) for name, layer in model.named_sublayers(include_self=True)
            for attr, p in layer._parameters.items() if p is not None}


class PruningPlan:
    """``{parameter name: [PruningMask]}`` to apply to a model, and to restore."""

    def __init__(self, model_name: Optional[str] = None):
        self._model_name = self._plan_id = model_name
        self._masks: Dict[str, List[PruningMask]] = {}
        self._dims: Dict[str, List[int]] = {}
        self._pruned_flops: Optional[float] = None
        self._engine: Optional[EnginePlan] = None  # what the masks came from, unchanged
        self._snapshot: Optional[Snapshot] = None

    pruned_flops = property(lambda self: self._pruned_flops)

    @pruned_flops.setter
    def pruned_flops(self, value) -> None:
        self._pruned_flops = value

    @property
    def masks(self) -> Dict[str, List[PruningMask]]:
        return self._masks

    @property
    def engine_plan(self) -> EnginePlan:
        """The engine's plan of these masks (kept indices per layer parameter)."""
        return self._engine

    @classmethod
    def from_engine(cls, plan: EnginePlan, model: paddle.nn.Layer) -> "PruningPlan":
        """The masks of an engine plan made for ``model`` as it is now."""
        layers = dict(model.named_sublayers(include_self=True))
        out = cls(model.full_name())
        for (layer, attr), cut in plan.params.items():
            name = layers[layer]._parameters[attr].name
            for axis, kept in cut.kept.items():
                mask = np.zeros(cut.shape[axis], dtype="int32")
                mask[np.asarray(kept, dtype=np.int64)] = 1
                out.add(name, PruningMask(axis, mask, 1 - len(kept) / cut.shape[axis]))
        out._engine = plan
        return out

    def add(self, var_name: str, pruning_mask: PruningMask) -> None:
        """Adds a mask; a second mask on the same axis keeps only what both keep."""
        if not isinstance(pruning_mask, PruningMask):
            raise ConfigError("pruning_mask", pruning_mask, "a PruningMask")
        self._engine = None
        dims = self._dims.setdefault(var_name, [])
        masks = self._masks.setdefault(var_name, [])
        if pruning_mask.dims in dims:
            for mask in masks:
                if mask.dims == pruning_mask.dims:
                    mask.mask = mask.mask.astype(np.int64) & pruning_mask.mask.astype(np.int64)
        else:
            masks.append(pruning_mask)
            dims.append(pruning_mask.dims)

    def extend(self, plan: "PruningPlan") -> None:
        for name, masks in plan.masks.items():
            for mask in masks:
                self.add(name, mask)

    def contains(self, var_name: str, dims: Optional[int] = None) -> bool:
        return var_name in self._dims and (dims is None or dims in self._dims[var_name])

    def __len__(self) -> int:
        return len(self._masks)

    def __str__(self) -> str:
        lines = [f"{name}:\t{','.join(str(m) for m in masks)}" for name, masks in self._masks.items()]
        return "variable name\tpruned ratio\tpruned dims\n" + "\n".join(lines) + \
            f"\npruned FLOPs: {self._pruned_flops}"

    # -- applying and restoring --------------------------------------------------
    def to_engine(self, model: paddle.nn.Layer) -> EnginePlan:
        """The engine plan of the masks for ``model`` (the one they came from if unchanged)."""
        if self._engine is not None:
            return self._engine
        owners, params = parameter_owners(model), {}
        layers = dict(model.named_sublayers(include_self=True))
        for name, masks in self._masks.items():
            if name not in owners:
                raise SlimError(f"the plan names parameter {name}, which the model does not have")
            layer, attr = owners[name]
            shape = list(layers[layer]._parameters[attr].shape)
            params[(layer, attr)] = ParamCut(shape, {m.dims: np.flatnonzero(m.mask).tolist() for m in masks})
        return EnginePlan(params)

    def apply(self, model: paddle.nn.Layer, lazy: bool = False, opt=None, prune_type: str = "conv",
              *, example_inputs=None):
        """Removes the masked entries (and the optimizer state's), or zeroes them
        (``lazy``). With ``example_inputs``, a forward pass must succeed afterwards or
        nothing is changed (SlimError)."""
        snapshot = Snapshot.take(model, opt, {})
        if lazy:
            self.lazy_apply(model)
        else:
            self.to_engine(model).apply(model, opt, example_inputs=example_inputs)
        self._snapshot = self._snapshot or snapshot

    def lazy_apply(self, model: paddle.nn.Layer) -> None:
        """Zeroes the masked entries; shapes stay."""
        owners, layers = parameter_owners(model), dict(model.named_sublayers(include_self=True))
        for name, masks in self._masks.items():
            layer, attr = owners[name]
            param = layers[layer]._parameters[attr]
            value = param.numpy()
            for m in masks:
                shape = [1] * value.ndim
                shape[m.dims] = value.shape[m.dims]
                value = value * m.mask.reshape(shape).astype(value.dtype)
            set_storage(param, value)

    def imperative_apply(self, model: paddle.nn.Layer, opt=None, prune_type: str = "conv") -> None:
        self.apply(model, lazy=False, opt=opt, prune_type=prune_type)

    def restore(self, model: Optional[paddle.nn.Layer] = None, opt=None) -> None:
        """Puts back every parameter (and optimizer state) this plan's ``apply`` changed."""
        if self._snapshot is not None:
            self._snapshot.restore()
            self._snapshot = None
