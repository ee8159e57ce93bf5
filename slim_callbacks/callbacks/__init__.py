"""Callbacks for ``paddle.Model.fit``: progressive pruning, and the aids that work
beside it (distillation, BN recalibration, the accuracy budget, BN-scale sparsity,
VisualDL); a NaN/Inf loss guard; the pruning schedules they run on."""
from slim_callbacks.callbacks.accuracy_budget import AccuracyBudget
from slim_callbacks.callbacks.aid import PruningAid
from slim_callbacks.callbacks.bn_l1 import BNScaleL1
from slim_callbacks.callbacks.distill import DistillCallback, kd_loss
from slim_callbacks.callbacks.guard import FiniteLossGuard
from slim_callbacks.callbacks.prune import PruneCallback
from slim_callbacks.callbacks.recalibration import BNRecalibration
from slim_callbacks.callbacks.taylor import TaylorCallback
from slim_callbacks.callbacks.visualdl import TAGS, VisualDLLogger
from slim_callbacks.pruning.schedule_factory import make_schedule
from slim_callbacks.pruning.schedules import Schedule

__all__ = ["AccuracyBudget", "BNRecalibration", "BNScaleL1", "DistillCallback",
           "FiniteLossGuard", "PruneCallback", "PruningAid", "Schedule", "TAGS",
           "TaylorCallback", "VisualDLLogger", "kd_loss", "make_schedule"]
