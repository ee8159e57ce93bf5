"""What a trace finds: the :class:`DependencyGraph` of a network (made by
:func:`~slim_callbacks.tracing.tracer.trace`)."""
from __future__ import annotations

import dataclasses
from typing import Dict, List

from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.products import ProductTable
from slim_callbacks.tracing.structure import Structure


@dataclasses.dataclass
class DependencyGraph:
    """What a trace found.

    Attributes:
        groups: every group of coupled channels, prunable or not.
        layer_types: structural name -> class name of every traced Conv/Linear/BN
            (and of each layer owning a free parameter sliced with channels).
        param_names: Paddle parameter name (``conv2d_0.w_0``) -> (layer, attr).
        unknown_ops: ``"op in layer"`` strings for ops that blocked channels.
        structure: the :class:`~slim_callbacks.tracing.structure.Structure` traced with.
        fallbacks: one line per grouped conv whose ``grouped_conv`` choice could not
            hold, pruned by positions instead (see :mod:`~slim_callbacks.tracing.grouped`).
        calls: structural name -> calls of each Conv/Linear/BN/... per forward pass.
        products: the products between activations of the eval pass (attention's),
            for counting their MACs after a plan
            (:class:`~slim_callbacks.tracing.products.ProductTable`).
    """

    groups: List[ChannelGroup]
    layer_types: Dict[str, str]
    param_names: Dict[str, tuple]
    unknown_ops: List[str]
    structure: Structure = dataclasses.field(default_factory=Structure)
    fallbacks: List[str] = dataclasses.field(default_factory=list)
    calls: Dict[str, int] = dataclasses.field(default_factory=dict)
    products: ProductTable = dataclasses.field(default_factory=ProductTable)

    def prunable_groups(self) -> List[ChannelGroup]:
        return [g for g in self.groups if g.prunable]
