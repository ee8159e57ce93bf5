"""The application: YAML recipes (rules, schema, overrides, loading), datasets, the
runner behind the ``slim-callbacks`` commands (job, builders, run directory, report),
the command line and the dashboard.

The top layer: it may use everything; nothing below imports it.
"""
