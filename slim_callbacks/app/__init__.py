"""The application: YAML recipes (rules and schema), datasets, the runner behind
the ``slim-callbacks`` commands, the command line and the dashboard.

The top layer: it may use everything; nothing below imports it.
"""
