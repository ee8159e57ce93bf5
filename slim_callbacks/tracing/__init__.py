"""Tracing: one forward pass that moves channel labels with the tensors, and the
groups of coupled channels it finds (labels -> groups -> grouped -> layer_rules;
op_args -> axis_rules -> param_views -> elementwise_rules, movement_rules ->
matmul_rules -> op_rules -> tracer).

Uses only :mod:`slim_callbacks.core`.
"""
