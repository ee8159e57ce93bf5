"""``paddleslim.analysis``'s FLOPs counters: ``flops`` and ``dygraph_flops``."""
from slim_callbacks.paddleslim.flops import dygraph_flops, flops  # noqa: F401

__all__ = ["flops", "dygraph_flops"]
