"""The pruning engine: criteria score a group's channels, selectors pick the ones
to remove, ratios checks the arguments and gives each group its ratio, the planner
turns ratios into a plan, plan and surgery resize parameters and optimizer state in
place; paddleslim holds the PaddleSlim-compatible front ends.

Uses :mod:`slim_callbacks.tracing` and :mod:`slim_callbacks.core`.
"""
