"""PaddleSlim's dygraph pruning API on slim_callbacks: change one import line.

    import slim_callbacks.paddleslim as paddleslim      # was: import paddleslim
    pruner = paddleslim.L1NormFilterPruner(net, [1, 3, 224, 224])
    pruner.prune_vars({"conv2d_0.w_0": 0.3}, axis=0)

Names, with PaddleSlim 2.6's signatures, defaults and return types: the filter pruners
(``FilterPruner``, ``L1NormFilterPruner``, ``L2NormFilterPruner``, ``FPGMFilterPruner``,
and ``SlimFilterPruner``, ``OptSlimFilterPruner`` that PaddleSlim has only for the
static graph), ``Status``, ``PruningPlan``, ``PruningMask``, ``flops``,
``dygraph_flops``, and the submodules ``dygraph``, ``analysis`` and ``prune`` (whose
static ``Pruner`` refuses with a pointer to these). It is a front end over the
project's :class:`~slim_callbacks.pruning.Pruner`; see the "Migrating from PaddleSlim"
page for the differences.

Examples:
    >>> import paddle
    >>> import slim_callbacks.paddleslim as paddleslim
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(),
    ...                            paddle.nn.Conv2D(8, 4, 3))
    >>> before = paddleslim.flops(net, [1, 3, 16, 16])
    >>> _ = paddleslim.FPGMFilterPruner(net, [1, 3, 16, 16]).prune_vars({net[0].weight.name: 0.5}, 0)
    >>> paddleslim.flops(net, [1, 3, 16, 16]) / before
    0.5
"""
from slim_callbacks.paddleslim import analysis, dygraph, prune  # noqa: F401
from slim_callbacks.paddleslim.filter_pruner import (
    FilterPruner,
    FPGMFilterPruner,
    L1NormFilterPruner,
    L2NormFilterPruner,
    OptSlimFilterPruner,
    SlimFilterPruner,
)
from slim_callbacks.paddleslim.flops import dygraph_flops, flops
from slim_callbacks.paddleslim.plan import PruningMask, PruningPlan
from slim_callbacks.paddleslim.status import Status

__all__ = ["FilterPruner", "L1NormFilterPruner", "L2NormFilterPruner", "FPGMFilterPruner",
           "SlimFilterPruner", "OptSlimFilterPruner", "Status", "PruningPlan", "PruningMask",
           "flops", "dygraph_flops", "analysis", "dygraph", "prune"]
