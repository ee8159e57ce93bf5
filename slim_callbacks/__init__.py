"""slim_callbacks: channel pruning for PaddlePaddle dynamic graph, inside model.fit().

The layers of the package, lowest first (a layer imports only the ones below it):
``core`` (errors, checks, Paddle specifics, weight files) < ``tracing`` (channel labels,
groups, the tracer) < ``engine`` (criteria, selectors, planner, plan, surgery) <
``deploy`` (Paddle Inference runtime, latency) <
``analysis`` (FLOPs, strategies, sensitivity) < ``callbacks`` (PruneCallback, schedules,
ledger, BN-L1, VisualDL) < ``app`` (recipes, data, runner, CLI, dashboard).
"""
from slim_callbacks.core.quiet import import_paddle

import_paddle()  # without Paddle's import-time noise (ccache; OMP_NUM_THREADS in the command)
from slim_callbacks.analysis.auto_round import prune
from slim_callbacks.analysis.bn_recalibration import recalibrate_bn
from slim_callbacks.analysis.explain import explain
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
from slim_callbacks.callbacks import (
    BNScaleL1,
    DistillCallback,
    FiniteLossGuard,
    PruneCallback,
    Schedule,
    TaylorCallback,
    VisualDLLogger,
    kd_loss,
    make_schedule,
)
from slim_callbacks.callbacks.ledger import load_pruned
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.version import package_version
from slim_callbacks.core.weights import load_state, save_safetensors
from slim_callbacks.deploy.export import ExportResult, export
from slim_callbacks.engine.criteria import CRITERIA, Criterion, get_criterion, register_criterion
from slim_callbacks.engine.paddleslim import (
    FPGMFilterPruner,
    L1NormFilterPruner,
    L2NormFilterPruner,
    OptSlimFilterPruner,
    SlimFilterPruner,
)
from slim_callbacks.engine.plan import PruningPlan
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.taylor import TaylorImportance
from slim_callbacks.tracing.groups import ChannelGroup
from slim_callbacks.tracing.kinds import LayerKind, register_layer
from slim_callbacks.tracing.op_rules import register_op
from slim_callbacks.tracing.tracer import DependencyGraph, trace

__version__ = package_version()
__all__ = [
    # errors
    "ConfigError", "SlimError",
    # tracing: coupled channel groups
    "ChannelGroup", "DependencyGraph", "LayerKind", "register_layer", "register_op", "trace",
    # engine: criteria, plans, pruning
    "CRITERIA", "Criterion", "PruningPlan", "get_criterion", "plan_pruning", "prune",
    "TaylorImportance", "register_criterion",
    # PaddleSlim-compatible pruners
    "FPGMFilterPruner", "L1NormFilterPruner", "L2NormFilterPruner", "OptSlimFilterPruner",
    "SlimFilterPruner",
    # analysis: FLOPs, strategies, sensitivity
    "STRATEGIES", "count_flops", "count_params", "custom_ratios", "explain", "global_ratios",
    "layer_widths", "load_sensitivities", "model_size_mb", "profile", "resolve_strategy",
    "sensitive_ratios", "sensitivity", "uniform_ratio",
    # callbacks for paddle.Model.fit, schedules, checkpoints
    "BNScaleL1", "DistillCallback", "FiniteLossGuard", "PruneCallback", "Schedule",
    "TaylorCallback", "VisualDLLogger", "kd_loss", "load_pruned", "make_schedule", "recalibrate_bn",
    # weights and models
    "load_state", "register_model", "save_safetensors",
    # deploy: verified inference export
    "ExportResult", "export",
]
