"""PaddleSlim-compatible front ends: ``FilterPruner`` and one subclass per criterion.

They keep PaddleSlim's calling convention (``pruner.prune_vars({"conv2d_0.w_0": 0.3})``)
and run :func:`~slim_callbacks.prune`; the subclasses differ only in
their criterion (:data:`CRITERION_PRUNERS`).
"""
from __future__ import annotations

from typing import Sequence

import paddle

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.ratios import Ratios, check_round_to
from slim_callbacks.pruning.pruner import prune


class FilterPruner:
    """PaddleSlim-compatible front end: ``pruner.prune_vars({"conv2d_0.w_0": 0.3})``.

    Keys of ``ratios`` may be Paddle parameter names exactly as in PaddleSlim's
    examples, or structural layer names and patterns.

    Example:
        >>> import paddle
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(),
        ...                            paddle.nn.Conv2D(8, 4, 3))
        >>> pruner = L1NormFilterPruner(net, [1, 3, 16, 16])
        >>> plan = pruner.prune_vars({"0": 0.5})
        >>> net[0]._out_channels, net[2]._in_channels
        (4, 4)
    """

    criterion = "l1_norm"

    def __init__(self, model: paddle.nn.Layer, inputs: Sequence[int], opt=None, round_to: int = 1):
        self.model, self.input_shape, self.optimizer = model, list(inputs), opt
        self.round_to = check_round_to(round_to)

    def prune_vars(self, ratios: Ratios, axis: int = 0, optimizer=None) -> PruningPlan:
        """Prunes the output channels (``axis=0``) of the named parameters' layers."""
        if axis != 0:
            raise ConfigError("axis", axis, "0 (output channels of conv filters)")
        return prune(self.model, self.input_shape, ratios, self.criterion,
                     optimizer=optimizer or self.optimizer, round_to=self.round_to)


# class name -> (criterion, docstring)
CRITERION_PRUNERS = {
    "L1NormFilterPruner": ("l1_norm", "Prunes the filters with the smallest L1 norm (arXiv 1608.08710)."),
    "L2NormFilterPruner": ("l2_norm", "Prunes the filters with the smallest L2 norm."),
    "FPGMFilterPruner": ("fpgm", "Prunes the filters closest to the geometric median (arXiv 1811.00250)."),
    "SlimFilterPruner": ("slim", "Prunes the channels whose BatchNorm scale |gamma| is smallest "
                                 "(arXiv 1708.06519)."),
    "OptSlimFilterPruner": ("opt_slim", "Slim with the optimal-threshold selector: ratio bounds a "
                                        "share of sum(gamma^2)."),
}


def _criterion_pruner(name: str) -> type:
    criterion, doc = CRITERION_PRUNERS[name]
    return type(name, (FilterPruner,), {"criterion": criterion, "__doc__": doc, "__module__": __name__})


L1NormFilterPruner = _criterion_pruner("L1NormFilterPruner")
L2NormFilterPruner = _criterion_pruner("L2NormFilterPruner")
FPGMFilterPruner = _criterion_pruner("FPGMFilterPruner")
SlimFilterPruner = _criterion_pruner("SlimFilterPruner")
OptSlimFilterPruner = _criterion_pruner("OptSlimFilterPruner")
