"""slim_callbacks: channel pruning for PaddlePaddle dynamic graph, inside model.fit()."""
import warnings

# Paddle warns on every import that ccache (for compiling custom C++ ops) is missing;
# it says nothing about pruning, so this one message is silenced for its module only.
warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning,
                        module=r"paddle\.utils\.cpp_extension")
from slim_callbacks.analysis.flops import count_flops, count_params, layer_widths, model_size_mb, profile
from slim_callbacks.analysis.global_strategy import global_ratios
from slim_callbacks.analysis.sensitivity import load_sensitivities, sensitivity
from slim_callbacks.analysis.strategies import (
                        STRATEGIES,
                        custom_ratios,
                        resolve_strategy,
                        sensitive_ratios,
                        uniform_ratio,
)
from slim_callbacks.app.builders import register_model
from slim_callbacks.callbacks import BNScaleL1, PruneCallback, VisualDLLogger
from slim_callbacks.callbacks.ledger import load_pruned
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.weights import load_state, save_safetensors
from slim_callbacks.engine.criteria import CRITERIA, Criterion, get_criterion, register_criterion
from slim_callbacks.engine.paddleslim import (
                        FPGMFilterPruner,
                        L1NormFilterPruner,
                        L2NormFilterPruner,
                        OptSlimFilterPruner,
                        SlimFilterPruner,
)
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning, prune
from slim_callbacks.tracing.tracer import DependencyGraph, trace

__version__ = "0.1.0"
__all__ = [
    "BNScaleL1", "PruneCallback", "VisualDLLogger", "load_pruned", "CRITERIA", "ConfigError", "Criterion",
    "DependencyGraph", "FPGMFilterPruner",
    "L1NormFilterPruner", "L2NormFilterPruner", "OptSlimFilterPruner", "PruningPlan",
    "SlimError", "SlimFilterPruner", "count_flops", "count_params", "get_criterion",
    "layer_widths", "model_size_mb", "plan_pruning", "profile", "prune",
    "register_criterion", "trace", "sensitivity", "load_sensitivities", "STRATEGIES",
    "custom_ratios", "global_ratios", "resolve_strategy", "sensitive_ratios", "uniform_ratio",
    "register_model", "load_state", "save_safetensors",
]
