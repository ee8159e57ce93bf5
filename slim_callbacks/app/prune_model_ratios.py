"""How ``prune-model`` turns its target into ratios: the strategy (``uniform``,
``global``, ``latency`` or ``sensitive``), the structure option, and label-free
sensitivities.

Without labels, a group's sensitivity is how far the network's outputs move from the
original's on the held-out images when that group alone is pruned: the metric is
``1 - mean|outputs - original| / mean|original|`` (1 for the unpruned network), so the
loss :func:`~slim_callbacks.analysis.sensitivity.sensitivity` records is the relative
output distance.

Examples:
    >>> parse_structure(["attention=heads"])
    {'attention': 'heads'}
    >>> check_strategy("sensitive", "macs")
    'sensitive'
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning.pruner import Pruner
from slim_callbacks.tracing.structure import check_structure

DEFAULTS = {"macs": "uniform", "latency": "latency"}  # target -> the strategy that meets it
FOR = {"uniform": "macs", "global": "macs", "sensitive": "macs", "latency": "latency"}
SENSITIVITY_RATIOS = (0.25, 0.5, 0.75)


def check_strategy(strategy: Optional[str], kind: str) -> str:
    """The strategy for a ``kind`` target (``macs`` or ``latency``); ConfigError unless it
    meets that kind."""
    strategy = DEFAULTS[kind] if strategy is None else strategy
    if FOR.get(strategy) != kind:
        allowed = [name for name, target in FOR.items() if target == kind]
        raise ConfigError("strategy", strategy, f"one of {', '.join(allowed)} for a {kind} "
                                                f"target")
    return strategy


def parse_structure(items: Optional[Sequence[str]]) -> Dict[str, str]:
    """``["attention=heads"]`` as a checked structure dict (ConfigError names a bad item)."""
    structure = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep:
            raise ConfigError("structure", item, "KEY=VALUE, e.g. attention=heads")
        structure[key] = value
    check_structure(structure)
    return structure


def output_metric(teacher: paddle.nn.Layer, images: np.ndarray):
    """``eval_fn(network)``: 1 minus the relative mean output distance to ``teacher`` on
    ``images`` (higher is better, 1 for an exact copy)."""
    x = paddle.to_tensor(images)
    with paddle.no_grad():
        teacher.eval()
        target = first_output(teacher(x)).numpy()
    scale = float(np.abs(target).mean()) or 1.0

    def eval_fn(network) -> float:
        with paddle.no_grad():
            network.eval()
            out = first_output(network(x)).numpy()
        return 1.0 - float(np.abs(out - target).mean()) / scale
    return eval_fn


def student_pruner(strategy: str, kind: str, share: float, student, teacher, shape,
                   probe: np.ndarray, criterion: str, structure: Dict[str, str],
                   file: str, progress: Optional[bool], ratios: Any = None) -> Pruner:
    """The student's prepared :class:`~slim_callbacks.pruning.Pruner`: a resumed run's
    saved ``ratios``, else the strategy's that meet the target (``sensitive`` measures
    label-free sensitivities on ``probe`` first, on the pruner's trace, into ``file``)."""
    common: Dict[str, Any] = {"structure": structure or None, "criterion": criterion}
    if ratios is not None:
        return Pruner(student, shape, ratios=ratios, **common).prepare()
    key = "target_flops_reduction" if kind == "macs" else "target_latency_reduction"
    options = {"sensitivities": file} if strategy == "sensitive" else {}
    pruner = Pruner(student, shape, strategy=strategy, strategy_options=options,
                    **common, **{key: share})
    if strategy == "sensitive":
        pruner.sensitivity(output_metric(teacher, probe), SENSITIVITY_RATIOS, file=file,
                           progress=progress)
    return pruner.prepare()


def first_output(out):
    """A network's first output (the only one, for most)."""
    return out[0] if isinstance(out, (list, tuple)) else out
