"""The pruning engine: criteria score a group's channels, selectors pick the ones
to remove, the planner turns ratios into a plan, surgery resizes parameters and
optimizer state in place.

Uses :mod:`slim_callbacks.tracing` and :mod:`slim_callbacks.core`.
"""
