"""The FLOPs model of a pruning plan: the FLOPs a network would have after a plan,
counted from the plan's parameter shapes without changing the network.

Owns :class:`FlopsModel`, :func:`output_positions` and the ``convention`` check.
"""
from __future__ import annotations

import copy
import logging
import math
from typing import Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops import CONVENTIONS, count_flops, count_observing, counts_macs
from slim_callbacks.core.checks import check_choice
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.paddle_utils import attributes_restored, is_linear, is_transposed_conv, modes_restored, unwrap
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.tracing.graph import DependencyGraph
from slim_callbacks.tracing.products import ProductTable, product_macs_after
from slim_callbacks.tracing.tracer import trace

# the records belong to the strategies that use the model: one logger for users to configure
logger = logging.getLogger("slim_callbacks.analysis.strategies")


def check_convention(value) -> str:
    return check_choice("convention", value, CONVENTIONS)


class FlopsModel:
    """Per-sample FLOPs of a network after a plan, without changing the network.

    For ``macs`` and ``flops`` the count is analytic: one forward pass records, per
    call of a layer the ``macs`` convention counts (Conv2D, Conv2DTranspose, Linear),
    how many positions its weight is applied at; a layer then costs positions x weight
    elements, so a plan's ``shape_after`` gives the count with no copy and no forward
    pass. The products between activations (attention's ``q @ k^T`` and ``attn @ v``)
    are counted from the labels of a trace (``graph``, else one is made): each operand
    position follows the producer channel it comes from (see
    :mod:`~slim_callbacks.tracing.products`). (A Conv2D's MACs are
    ``H_out * W_out * C_out * Kh * Kw * C_in / groups``, its weight has
    ``C_out * C_in / groups * Kh * Kw`` elements; a Conv2DTranspose's are
    ``H_in * W_in * C_in * C_out / groups * Kh * Kw``, its weight has
    ``C_in * C_out / groups * Kh * Kw``.) It equals :func:`~slim_callbacks.analysis.flops.count_flops` of
    the really pruned network; if the analytic base count ever disagrees with
    ``count_flops`` (a product the trace could not describe), and always for
    ``paddleslim_legacy``, each plan is applied to a deep copy and counted instead.

    Examples:
        >>> import paddle
        >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.Conv2D(8, 4, 1))
        >>> model = FlopsModel(net, [1, 3, 6, 6])
        >>> model.base  # 4*4*8 outputs x 3*3*3, then 4*4*4 outputs x 8
        3968
    """

    def __init__(self, network: paddle.nn.Layer, input_shape: Sequence[int], convention: str = "macs",
                 graph: Optional[DependencyGraph] = None):
        self.network = unwrap(network)
        self.inputs = as_inputs(input_shape)
        self.convention = check_convention(convention)
        self.positions: Optional[Dict[str, int]] = None
        self.products: Optional[ProductCounter] = None
        if self.convention not in ("macs", "flops"):
            self.base = count_flops(self.network, self.inputs, self.convention)
        else:  # the base count and the positions from one forward pass
            self.positions = {}
            self.base = count_observing(self.network, self.inputs, self.convention,
                                        position_counter(self.network, self.positions))
            self.shapes = {name: list(layer.weight.shape)
                           for name, layer in self.network.named_sublayers() if name in self.positions}
            if self._analytic({}) != self.base:
                self.products = ProductCounter(self._product_table(graph))
            if self._analytic({}) != self.base:
                logger.debug("analytic %s count %d differs from count_flops %d: counting "
                             "pruned copies", self.convention, self._analytic({}), self.base)
                self.positions = None

    def _product_table(self, graph: Optional[DependencyGraph]) -> ProductTable:
        """The products of ``graph`` if it was traced at this input shape, else a trace's."""
        if graph is None or graph.products.inputs != self.inputs:
            graph = trace(self.network, self.inputs, graph.structure if graph else None)
        return graph.products

    def _analytic(self, params) -> int:
        total = 0
        for name, positions in self.positions.items():
            cut = params.get((name, "weight"))
            total += positions * math.prod(cut.shape_after if cut else self.shapes[name])
        if self.products is not None:
            total += self.products.macs(params)
        macs = total // self.inputs.batch
        return 2 * macs if self.convention == "flops" else macs

    def count(self, plan: PruningPlan) -> int:
        """FLOPs (in this model's convention) of the network after ``plan``."""
        if self.positions is not None:
            return self._analytic(plan.params)
        pruned = copy.deepcopy(self.network)
        plan.apply(pruned)
        return count_flops(pruned, self.inputs, self.convention)

    def reduction(self, plan: PruningPlan) -> float:
        """Share of the FLOPs that ``plan`` removes."""
        return 1 - self.count(plan) / self.base


class ProductCounter:
    """MACs of a trace's products between activations after a plan's cuts, from the
    producer entries each operand position comes from (no copy, no forward pass)."""

    def __init__(self, table: ProductTable):
        self.table = table
        by_param: Dict[tuple, list] = {}
        for i, (layer, attr, axis, index) in enumerate(table.sources, start=1):
            by_param.setdefault((layer, attr, axis), []).append((i, index))
        self.by_param = {key: (np.array([i for i, _ in v]), np.array([x for _, x in v]))
                         for key, v in by_param.items()}

    def macs(self, params) -> int:
        """Whole-batch MACs of every product with ``params`` ((layer, attr) -> cut)
        applied; 0 if the table is incomplete (the caller's check then fails)."""
        if not self.table.complete:
            return 0
        kept = np.ones(len(self.table.sources) + 1, dtype=bool)
        for (layer, attr, axis), (ids, indices) in self.by_param.items():
            cut = params.get((layer, attr))
            if cut is not None and axis in cut.kept:
                kept[ids] = np.isin(indices, cut.kept[axis])
            elif cut is not None and axis in cut.blocks:
                kept[ids] = np.isin(indices, np.unique(cut.blocks[axis][1]))
        return sum(product_macs_after(p, kept) for p in self.table.products)


def output_positions(network: paddle.nn.Layer, input_shape: Sequence[int]) -> Dict[str, int]:
    """Structural name -> positions its weight is applied at (output elements per output
    channel; input elements per input channel for a transposed conv), summed over
    calls, for every leaf layer the ``macs`` convention counts."""
    positions: Dict[str, int] = {}
    forward_with_hooks(network, input_shape, counts_macs, position_counter(network, positions))
    return positions


def position_counter(network: paddle.nn.Layer, positions: Dict[str, int]):
    """A forward hook that adds each call's positions to ``positions`` (structural name
    -> positions, see :func:`output_positions`)."""
    names = {id(layer): name for name, layer in network.named_sublayers()}

    def hook(layer, inputs, output):
        name = names[id(layer)]
        if is_transposed_conv(layer):  # weight [C_in, C_out / groups, Kh, Kw], applied per input
            count = math.prod(inputs[0].shape) // layer.weight.shape[0]
        else:
            channels = layer.weight.shape[1] if is_linear(layer) else layer.weight.shape[0]
            count = math.prod(output.shape) // channels
        positions[name] = positions.get(name, 0) + count
    return hook


def forward_with_hooks(network: paddle.nn.Layer, input_shape: Sequence[int], chosen, hook,
                       pre: bool = False) -> None:
    """One eval-mode forward pass on zeros with ``hook`` on every leaf layer that
    ``chosen(layer)`` picks (a forward post-hook, or a pre-hook if ``pre``)."""
    handles = []
    try:
        for layer in network.sublayers():
            if chosen(layer) and not layer.sublayers():
                register = layer.register_forward_pre_hook if pre else layer.register_forward_post_hook
                handles.append(register(hook))
        with modes_restored(network, training=False), paddle.no_grad(), \
                attributes_restored(network):
            as_inputs(input_shape).call(network)
    finally:
        for handle in handles:
            handle.remove()
