"""Callbacks for ``paddle.Model.fit``: progressive pruning, BN-scale sparsity,
distillation, VisualDL, a NaN/Inf loss guard; the pruning schedules they run on."""
from slim_callbacks.callbacks.bn_l1 import BNScaleL1
from slim_callbacks.callbacks.distill import DistillCallback, kd_loss
from slim_callbacks.callbacks.guard import FiniteLossGuard
from slim_callbacks.callbacks.prune import PruneCallback
from slim_callbacks.callbacks.taylor import TaylorCallback
from slim_callbacks.callbacks.visualdl import TAGS, VisualDLLogger
from slim_callbacks.pruning.schedule_factory import make_schedule
from slim_callbacks.pruning.schedules import Schedule

__all__ = ["BNScaleL1", "DistillCallback", "FiniteLossGuard", "PruneCallback", "Schedule", "TAGS",
           "TaylorCallback", "VisualDLLogger", "kd_loss", "make_schedule"]
