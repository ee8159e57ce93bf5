"""Pruning: the :class:`Pruner` and its :class:`PruningSpec`, the schedules that say
when to prune (PaddleSlim's API is :mod:`slim_callbacks.paddleslim`).

Above the engine, the analysis (strategies, FLOPs) and the latency, below the callbacks and
the application: everything that prunes - :func:`prune`, ``PruneCallback``, recipes, a
hand-written loop - goes through a :class:`Pruner`.
"""
from slim_callbacks.pruning.pruner import Pruner, prune
from slim_callbacks.pruning.schedule_factory import make_schedule
from slim_callbacks.pruning.schedules import Schedule
from slim_callbacks.pruning.spec import PruningSpec
from slim_callbacks.pruning.state import PruningEvent, PruningState

__all__ = ["Pruner", "PruningEvent", "PruningSpec", "PruningState", "Schedule", "make_schedule",
           "prune"]
