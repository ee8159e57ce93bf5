"""Analysis: FLOPs and parameter counts, ratio strategies (FLOPs targets,
sensitivities, global thresholds) and sensitivity analysis with its worker processes.

Uses the engine, the tracer and the core; never a callback or the application.
"""
