"""Latency: measuring Paddle Inference latency side by side (:mod:`.measure`), the
per-layer timing cache (:mod:`.table`), the latency model built on it (:mod:`.model`),
the ``latency`` strategy (:mod:`.strategy`), estimating what a latency run will measure
(:mod:`.estimate`) and ``round_to="auto"`` (:mod:`.auto_round`).

Above the analysis (FLOPs, the strategy registry), below the pruning. Importing this
package registers the ``latency`` strategy and ``round_to="auto"`` with
:mod:`slim_callbacks.analysis.strategies` (``slim_callbacks`` imports it first).
"""
from functools import partial

from slim_callbacks.analysis.strategies import register_measured_round_to, register_strategy
from slim_callbacks.latency.auto_round import AUTO, resolve_round_to
from slim_callbacks.latency.strategy import latency_ratios

register_strategy("latency", latency_ratios)
register_measured_round_to(AUTO, partial(resolve_round_to, AUTO))
