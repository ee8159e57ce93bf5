"""PaddleSlim's dygraph ``FilterPruner`` and its criterion subclasses, over the engine.

Same constructor, methods and return types as ``paddleslim.dygraph`` (2.6):

    pruner = L1NormFilterPruner(net, [1, 3, 224, 224], opt=optimizer)
    plan = pruner.prune_vars({"conv2d_0.w_0": 0.3}, axis=0)   # a PruningPlan
    pruner.restore()                                          # all back, bit for bit

Every call plans with a :class:`~slim_callbacks.pruning.Pruner` (the coupled groups, the
criterion, the optimizer state) and applies through the returned
:class:`~slim_callbacks.paddleslim.plan.PruningPlan`. Coupled channels are ranked by the
parameter named in ``ratios`` (``coupled_scoring="named"``, PaddleSlim's way;
``"sum"`` adds the scores of every conv of the group). Depthwise-conv weights in
``ratios`` are skipped with a log line (their channels follow the conv feeding them);
parameters of transposed convs too.

Examples:
    >>> import paddle
    >>> net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(),
    ...                            paddle.nn.Conv2D(8, 4, 3))
    >>> pruner = L1NormFilterPruner(net, [1, 3, 16, 16])
    >>> plan = pruner.prune_vars({net[0].weight.name: 0.5}, axis=0)
    >>> list(net[0].weight.shape), int(plan.masks[net[0].weight.name][0].mask.sum())
    ([4, 3, 3, 3], 4)
    >>> pruner.restore(); list(net[0].weight.shape)
    [8, 3, 3, 3]
"""
from __future__ import annotations

import logging
import os
from typing import Dict, Optional, Sequence

import paddle

from slim_callbacks.core.checks import check_choice
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.ratios import check_round_to
from slim_callbacks.paddleslim import sensitive as sens
from slim_callbacks.paddleslim.flops import example_inputs, flops
from slim_callbacks.paddleslim.plan import PruningPlan
from slim_callbacks.paddleslim.status import Status
from slim_callbacks.pruning.pruner import Pruner
from slim_callbacks.pruning.snapshot import Snapshot
from slim_callbacks.pruning.spec import COUPLED_SCORING
from slim_callbacks.tracing.tracer import trace

logger = logging.getLogger(__name__)

APPLY = ("impretive", "imperative", "lazy", None)  # PaddleSlim spells it "impretive"


class FilterPruner:
    """PaddleSlim's filter pruner (see the module docstring).

    Args:
        model: the dygraph network.
        inputs: its example inputs: a shape such as ``[1, 3, 224, 224]``, a list of
            shapes (one per ``forward`` argument), or the inputs themselves (tensors).
        sen_file: a sensitivity file to start from (JSON; see :class:`Status`).
        opt: the optimizer training ``model``: its state is pruned and restored too.
        skip_leaves: convs whose channels reach the output are never pruned anyway.
        prune_type: ``"conv"``.
        num_head: -1 (for attention heads use the native ``structure={"attention": "heads"}``).
        input_dtype: the dtype of inputs given as shapes: one for all, or one each.
        allow_pickle: read a PaddleSlim-written (pickle) ``sen_file``; pickles run code.
        round_to: kept channels are a multiple of this.
        coupled_scoring: ``"named"`` (PaddleSlim) or ``"sum"``, see the module docstring.
    """

    criterion = "l1_norm"

    def __init__(self, model: paddle.nn.Layer, inputs, sen_file: Optional[str] = None, opt=None,
                 skip_leaves: bool = True, prune_type: str = "conv", num_head: int = -1,
                 input_dtype: str = "float32", *, allow_pickle: bool = False, round_to: int = 1,
                 coupled_scoring: str = "named"):
        if sen_file is not None and not isinstance(sen_file, (str, os.PathLike)):
            raise ConfigError("sen_file", sen_file, "a sensitivity file path or None (the "
                                                    "optimizer is the fourth argument, opt=)")
        if prune_type != "conv":
            raise ConfigError("prune_type", prune_type, "'conv'")
        if num_head != -1:
            raise ConfigError("num_head", num_head, "-1 (prune heads with the native API: "
                                                    "structure={'attention': 'heads'})")
        self.model, self.inputs, self.opt = model, inputs, opt
        self.example_inputs = example_inputs(inputs, input_dtype)
        self.input_shape = self.example_inputs.shape  # None for several inputs
        self.skip_leaves, self.prune_type, self.num_head = skip_leaves, prune_type, num_head
        self.round_to = check_round_to(round_to)
        self.coupled_scoring = check_choice("coupled_scoring", coupled_scoring, COUPLED_SCORING)
        self.allow_pickle = allow_pickle
        self._status = Status(sen_file, allow_pickle=allow_pickle)
        self.plan: Optional[PruningPlan] = None
        self._original: Optional[Snapshot] = None
        self.skip_vars = [p.name for layer in model.sublayers() if isinstance(layer, paddle.nn.Conv2DTranspose)
                          for p in layer.parameters()]

    # -- pruning -------------------------------------------------------------------
    def _pruner(self, ratios, round_to: Optional[int] = None, graph=None) -> Pruner:
        return Pruner(self.model, self.example_inputs, ratios=ratios, criterion=self.criterion,
                      round_to=round_to or self.round_to, coupled_scoring=self.coupled_scoring,
                      optimizer=self.opt, graph=graph)

    def _prunable(self, ratios: Dict[str, float], graph) -> Dict[str, float]:
        """``ratios`` less the parameters no group is ranked by (logged)."""
        producers = {p for g in graph.groups for p in g.producers}
        out = {}
        for name, ratio in ratios.items():
            owner = graph.param_names.get(name)
            if name in self.skip_vars or (owner is not None and owner[0] not in producers):
                logger.info("%s is skipped: its channels follow the conv feeding it (a depthwise "
                            "conv) or it is not prunable directly; prune that conv instead", name)
                continue
            out[name] = ratio
        return out

    def prune_vars(self, ratios: Dict[str, float], axis=0, apply: Optional[str] = "impretive",
                   *, round_to: Optional[int] = None, graph=None) -> PruningPlan:
        """Prunes the output channels of each named parameter's conv by its ratio.

        ``apply``: ``"impretive"`` removes them (and the optimizer's entries), ``"lazy"``
        zeroes them (shapes stay), ``None`` only plans. ``graph``: the model's trace as
        it is now, if the caller has one. Returns the :class:`PruningPlan`.
        """
        axis = axis[0] if isinstance(axis, (list, tuple)) and axis else axis
        if axis != 0:
            raise ConfigError("axis", axis, "0 (output channels of conv filters)")
        if apply is not None:
            check_choice("apply", apply, [a for a in APPLY if a])
        if not isinstance(ratios, dict):
            raise ConfigError("ratios", ratios, "a {parameter name: ratio} dict")
        graph = graph if graph is not None else trace(self.model, self.example_inputs)
        ratios = self._prunable(ratios, graph)
        plan = PruningPlan(self.model.full_name())
        if ratios:
            pruner = self._pruner(ratios, round_to, graph)
            plan = PruningPlan.from_engine(pruner.plan_to(pruner.prepare().group_ratios), self.model)
        if apply is not None:
            if self._original is None:
                self._original = Snapshot.take(self.model, self.opt, {})
            plan.apply(self.model, lazy=apply == "lazy", opt=self.opt,
                       example_inputs=self.example_inputs)
        self.plan = plan
        return plan

    def prune_var(self, var_name: str, pruned_axis, pruned_ratio: float,
                  apply: Optional[str] = "impretive") -> PruningPlan:
        """Prunes one parameter's conv (see :meth:`prune_vars`)."""
        return self.prune_vars({var_name: pruned_ratio}, pruned_axis, apply)

    def restore(self) -> None:
        """Puts back every parameter and the optimizer state as they were before the
        first pruning since the last restore, bit for bit."""
        if self._original is not None:
            self._original.restore()
            self._original = None

    # -- sensitivity ---------------------------------------------------------------
    def sensitive(self, eval_func=None, sen_file: Optional[str] = None,
                  target_vars: Optional[Sequence[str]] = None, skip_vars: Sequence[str] = ()):
        """Fills, saves (``sen_file``, JSON, after every evaluation) and returns the table
        ``{weight name: {ratio: loss}}``; resumes from what ``sen_file`` holds.
        ``eval_func()`` takes no argument and returns the metric (higher is better)."""
        if eval_func is None and sen_file is None:
            return self._status.sensitivies
        if sen_file is not None and os.path.isfile(sen_file):
            self._status.load(sen_file, allow_pickle=self.allow_pickle)
        if not self._status.is_ckp or eval_func is None:
            return self._status.sensitivies
        graph, layers = trace(self.model, self.example_inputs), layer_table(self.model)
        skip = set(skip_vars) | set(self.skip_vars)
        names = [n for n in sens.conv_targets(graph, layers)
                 if (target_vars is None or n in target_vars) and n not in skip]
        sens.analyse(self.model, eval_func, graph, layers, self._status,
                     get_criterion(self.criterion), names, sen_file, self.round_to)
        self._status.is_ckp = False
        return self._status.sensitivies

    def get_ratios_by_sensitivity(self, pruned_flops: float, align: Optional[int] = None,
                                  dims: int = 0, skip_vars: Sequence[str] = ()):
        """``(ratios, pruned FLOPs)``: per-parameter ratios from the sensitivities that
        remove ``pruned_flops`` of the FLOPs, and the share they remove (measured)."""
        if not self._status.sensitivies:
            raise SlimError("no sensitivities yet: call sensitive(eval_func, sen_file) first, or "
                            "pass the sen_file of an earlier analysis to the constructor")
        graph, layers = trace(self.model, self.example_inputs), layer_table(self.model)
        skip = list(skip_vars) + self.skip_vars
        ratios = sens.ratios_by_sensitivity(self.model, self.example_inputs, graph, layers,
                                            self._status.sensitivies, pruned_flops,
                                            self.criterion, skip, align)
        base = flops(self.model, self.example_inputs, only_conv=False)
        original, previous = self._original, self.plan
        plan = self.prune_vars(ratios, dims, round_to=align, graph=graph)
        pruned = (base - flops(self.model, self.example_inputs, only_conv=False)) / base
        plan.restore()
        self._original, self.plan = original, previous
        return ratios, pruned

    def sensitive_prune(self, pruned_flops: float, skip_vars: Sequence[str] = (),
                        align: Optional[int] = None) -> PruningPlan:
        """Restores, then prunes by the sensitivities to remove ``pruned_flops``."""
        self.restore()
        ratios, pruned = self.get_ratios_by_sensitivity(pruned_flops, align=align, skip_vars=skip_vars)
        self.plan = self.prune_vars(ratios, 0, round_to=align)
        self.plan.pruned_flops = pruned
        return self.plan


# class name -> (criterion, docstring)
CRITERION_PRUNERS = {
    "L1NormFilterPruner": ("l1_norm", "Prunes the filters with the smallest L1 norm (arXiv 1608.08710)."),
    "L2NormFilterPruner": ("l2_norm", "Prunes the filters with the smallest L2 norm."),
    "FPGMFilterPruner": ("fpgm", "Prunes the filters closest to the geometric median (arXiv 1811.00250)."),
    "SlimFilterPruner": ("slim", "Prunes the channels whose BatchNorm scale |gamma| is smallest "
                                 "(arXiv 1708.06519; static graph only in PaddleSlim)."),
    "OptSlimFilterPruner": ("opt_slim", "Slim with the optimal-threshold selector: ratio bounds a "
                                        "share of sum(gamma^2) (static graph only in PaddleSlim)."),
}


def _criterion_pruner(name: str) -> type:
    criterion, doc = CRITERION_PRUNERS[name]
    return type(name, (FilterPruner,), {"criterion": criterion, "__doc__": doc, "__module__": __name__})


L1NormFilterPruner = _criterion_pruner("L1NormFilterPruner")
L2NormFilterPruner = _criterion_pruner("L2NormFilterPruner")
FPGMFilterPruner = _criterion_pruner("FPGMFilterPruner")
SlimFilterPruner = _criterion_pruner("SlimFilterPruner")
OptSlimFilterPruner = _criterion_pruner("OptSlimFilterPruner")
