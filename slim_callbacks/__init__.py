"""slim_callbacks: channel pruning for PaddlePaddle dynamic graph, inside model.fit().

The layers of the package, lowest first (a layer imports only the ones below it):
``core`` (errors, checks, Paddle specifics, weight files) < ``tracing`` (channel labels,
groups, the tracer) < ``engine`` (criteria, selectors, planner, plan, surgery) <
``deploy`` (Paddle Inference runtime, export) <
``program`` (exported inference programs rebuilt as networks) <
``analysis`` (FLOPs, strategies, sensitivity) < ``latency`` (measuring, the timing
cache, the latency model and strategy, ``round_to="auto"``) < ``pruning`` (Pruner, PruningSpec,
schedules) < ``callbacks`` (PruneCallback, ledger, budget, BN-L1, distillation,
VisualDL) < ``integrations`` (other trainers) < ``paddleslim`` (PaddleSlim's dygraph
pruning API) < ``app`` (recipes, data, runner, CLI, dashboard).
"""
import importlib
import warnings

from slim_callbacks.core.quiet import import_paddle

import_paddle()  # without Paddle's import-time noise (ccache; OMP_NUM_THREADS in the command)
import slim_callbacks.latency  # noqa: F401  (registers the latency strategy and round_to="auto")
from slim_callbacks.analysis.explain import explain
from slim_callbacks.analysis.flops import count_flops, profile
from slim_callbacks.analysis.sensitivity import sensitivity
from slim_callbacks.analysis.strategies import STRATEGIES, resolve_strategy
from slim_callbacks.app.builders import register_model
from slim_callbacks.callbacks import BNScaleL1, DistillCallback, PruneCallback, VisualDLLogger
from slim_callbacks.callbacks.ledger import load_pruned
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.version import package_version
from slim_callbacks.deploy.export import export
from slim_callbacks.engine.criteria import Criterion, register_criterion
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.program import load_inference_model
from slim_callbacks.pruning import Pruner, PruningSpec, Schedule, make_schedule, prune
from slim_callbacks.tracing.kinds import register_layer
from slim_callbacks.tracing.op_rules import register_op
from slim_callbacks.tracing.tracer import trace

__version__ = package_version()
__all__ = [
    # errors
    "ConfigError", "SlimError",
    # the pruning core: what to prune, the pruner, one-call pruning, the plan it applies
    "PruningSpec", "Pruner", "prune", "PruningPlan",
    # callbacks for paddle.Model.fit and their schedules
    "PruneCallback", "DistillCallback", "BNScaleL1", "VisualDLLogger", "Schedule", "make_schedule",
    # analysis: counts, sensitivity, strategies, explanations
    "count_flops", "profile", "sensitivity", "explain", "STRATEGIES", "resolve_strategy",
    # extending: criteria, layers, ops, models; the tracer
    "Criterion", "register_criterion", "register_layer", "register_op", "register_model", "trace",
    # deploy: verified inference export, reloading a pruned checkpoint, an exported
    # inference model back as a network
    "export", "load_pruned", "load_inference_model",
]

#: Names that left the top level (deprecated): name -> the module that has it now.
MOVED = {
    "ChannelGroup": "slim_callbacks.tracing.groups",
    "DependencyGraph": "slim_callbacks.tracing.graph",
    "LayerKind": "slim_callbacks.tracing.kinds",
    "CRITERIA": "slim_callbacks.engine.criteria",
    "get_criterion": "slim_callbacks.engine.criteria",
    "plan_pruning": "slim_callbacks.engine.planner",
    "TaylorImportance": "slim_callbacks.engine.taylor",
    "FPGMFilterPruner": "slim_callbacks.paddleslim",
    "L1NormFilterPruner": "slim_callbacks.paddleslim",
    "L2NormFilterPruner": "slim_callbacks.paddleslim",
    "OptSlimFilterPruner": "slim_callbacks.paddleslim",
    "SlimFilterPruner": "slim_callbacks.paddleslim",
    "count_params": "slim_callbacks.analysis.flops",
    "layer_widths": "slim_callbacks.analysis.flops",
    "model_size_mb": "slim_callbacks.analysis.flops",
    "custom_ratios": "slim_callbacks.analysis.strategies",
    "sensitive_ratios": "slim_callbacks.analysis.sensitive_strategy",
    "uniform_ratio": "slim_callbacks.analysis.uniform_strategy",
    "global_ratios": "slim_callbacks.analysis.global_strategy",
    "load_sensitivities": "slim_callbacks.analysis.sensitivity_file",
    "recalibrate_bn": "slim_callbacks.analysis.bn_recalibration",
    "FiniteLossGuard": "slim_callbacks.callbacks",
    "TaylorCallback": "slim_callbacks.callbacks",
    "kd_loss": "slim_callbacks.callbacks",
    "load_state": "slim_callbacks.core.weights",
    "save_safetensors": "slim_callbacks.core.weights",
    "ExportResult": "slim_callbacks.deploy.export",
}


def __getattr__(name):
    """A name that moved off the top level still works for one release, with a
    DeprecationWarning naming its module (listed in CHANGELOG.md)."""
    module = MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'slim_callbacks' has no attribute {name!r}")
    warnings.warn(f"slim_callbacks.{name} is deprecated and leaves the top level in 0.3; "
                  f"import it from {module}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)
