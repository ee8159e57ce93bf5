"""``paddleslim.dygraph``'s pruning names: ``from slim_callbacks.paddleslim.dygraph
import L1NormFilterPruner`` works as ``from paddleslim.dygraph import ...`` did."""
from slim_callbacks.paddleslim.filter_pruner import (  # noqa: F401
    FilterPruner,
    FPGMFilterPruner,
    L1NormFilterPruner,
    L2NormFilterPruner,
    OptSlimFilterPruner,
    SlimFilterPruner,
)
from slim_callbacks.paddleslim.plan import PruningMask, PruningPlan  # noqa: F401
from slim_callbacks.paddleslim.status import Status  # noqa: F401

__all__ = ["FilterPruner", "L1NormFilterPruner", "L2NormFilterPruner", "FPGMFilterPruner",
           "SlimFilterPruner", "OptSlimFilterPruner", "Status", "PruningPlan", "PruningMask"]
