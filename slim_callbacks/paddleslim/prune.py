"""``paddleslim.prune``: PaddleSlim's static-graph pruner, which is not supported.

PaddleSlim's ``prune.Pruner(criterion).prune(program, scope, params, ratios, place)``
edits a ``fluid`` Program. On Paddle 3 the static graph is reached through
``paddle.jit.to_static``, whose network stays a dygraph Layer and is pruned by the
supported paths; constructing this ``Pruner`` says so.

Examples:
    >>> Pruner(criterion="l1_norm")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.SlimError: paddleslim.prune.Pruner prunes a static Program, ...
"""
from __future__ import annotations

from slim_callbacks.core.errors import SlimError

SUPPORTED = ("prune the dygraph network instead: slim_callbacks.paddleslim.L1NormFilterPruner("
             "net, [1, 3, H, W]).prune_vars({'conv2d_0.w_0': 0.3}, axis=0), slim_callbacks.prune(net, "
             "[1, 3, H, W], ratios) or PruneCallback in paddle.Model.fit; a forward converted with "
             "paddle.jit.to_static is pruned the same way")


class Pruner:
    """Refuses at once: static Programs are not pruned (see the module docstring)."""

    def __init__(self, criterion: str = "l1_norm", idx_selector: str = "default_idx_selector", *args, **kwargs):
        raise SlimError(f"paddleslim.prune.Pruner prunes a static Program, which slim_callbacks "
                        f"does not support; {SUPPORTED}")

    def prune(self, program, scope, params, ratios, place=None, *args, **kwargs):
        raise SlimError(f"paddleslim.prune.Pruner.prune is not supported; {SUPPORTED}")
