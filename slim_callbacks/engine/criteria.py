"""Importance criteria: objects that score the units of a coupled group (low = prune).

A :class:`Criterion` is called on a group and returns one score per unit; it never
edits the network. What it reads is declared in :attr:`Criterion.needs`:

- ``"weights"`` (:class:`Criterion`): ``score`` maps each producer's weights, as a
  ``[channels, -1]`` matrix, to row scores (``l1_norm``, ``l2_norm``, ``fpgm``);
- ``"bn_scales"`` (:class:`BNScaleCriterion`): the BatchNorm scales that follow the
  producers (``slim``, ``opt_slim``); a group without BatchNorm falls back to
  ``l1_norm`` with a warning;
- ``"gradients"`` (:class:`TaylorCriterion`): first-order Taylor terms accumulated over
  training batches (``taylor``, :mod:`slim_callbacks.engine.taylor`); whoever drives the
  training attaches the accumulator (``PruneCallback`` does it when ``needs`` asks).

Scores of every producer (or BatchNorm) of a group are summed per unit. Add your own
with :func:`register_criterion`: a plain row-score function for the simple case, or a
:class:`Criterion` object (e.g. a subclass overriding :meth:`Criterion.__call__`):

    >>> import numpy as np
    >>> criterion = register_criterion("max_abs", lambda w: np.abs(w).max(axis=1))
    >>> get_criterion("max_abs") is criterion, criterion.selector, criterion.needs
    (True, 'lowest', 'weights')
    >>> del CRITERIA["max_abs"]

The selector (which units go, given the scores) is a name of a built-in one or any
callable (see :mod:`slim_callbacks.engine.selectors`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, ClassVar, Dict, List, Optional, Union

import numpy as np
from threadpoolctl import threadpool_limits

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.selectors import Selector, get_selector
from slim_callbacks.engine.taylor import taylor_scores
from slim_callbacks.tracing.groups import CHANNEL, OUT, ChannelGroup

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]


def rows(param: np.ndarray, axis: int) -> np.ndarray:
    """The parameter as a ``[channels, -1]`` matrix, channels along ``axis``."""
    return np.moveaxis(param, axis, 0).reshape(param.shape[axis], -1)


def producer_members(group: ChannelGroup) -> list:
    """The producers' weights of ``group`` (one member per producer)."""
    return [m for m in group.members if m.role == OUT and m.attr == "weight"]


def bn_members(group: ChannelGroup, layer_types: Dict[str, str]) -> list:
    """The BatchNorm scales of ``group``."""
    return [m for m in group.members if m.role == CHANNEL and m.attr == "weight"
            and "BatchNorm" in layer_types.get(m.layer, "")]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """Scores the units of a group from its producers' weights.

    Attributes:
        name: registry name.
        score: maps a ``[channels, k]`` matrix to ``[channels]`` scores (low = prune).
        selector: ``"lowest"`` (prune the lowest ``ratio`` share of channels),
            ``"optimal_threshold"`` (OptSlim: ``ratio`` bounds a share of sum(gamma^2))
            or a selector callable (see :mod:`slim_callbacks.engine.selectors`).
        select: the selector callable itself (``selector`` resolved),
            ``select(scores, ratio, *, keep, min_keep) -> unit indices to remove``.
        needs: what it reads: ``"weights"``, ``"bn_scales"`` or ``"gradients"``.
    """

    name: str
    score: ScoreFn
    selector: Union[str, Selector] = "lowest"
    select: Selector = dataclasses.field(init=False, repr=False, compare=False)
    needs: ClassVar[str] = "weights"

    def __post_init__(self):
        object.__setattr__(self, "select", get_selector(self.selector))

    def members(self, group: ChannelGroup, layer_types: Dict[str, str]) -> list:
        """The group's members whose rows are scored."""
        return producer_members(group)

    def matrix(self, param, axis: int) -> np.ndarray:
        """The ``[channels, k]`` matrix ``score`` reads from one member's parameter."""
        return rows(param.numpy(), axis)

    def __call__(self, group: ChannelGroup, layers, layer_types: Dict[str, str]) -> np.ndarray:
        """One score per unit of ``group``, summed over its scored members.

        Args:
            group: the coupled channels.
            layers: structural name -> layer, e.g. ``dict(network.named_sublayers())``.
            layer_types: structural name -> class name, from the trace.
        """
        scores = np.zeros(group.num_units, dtype=np.float64)
        for m in self.members(group, layer_types):
            matrix = self.matrix(layers[m.layer]._parameters[m.attr], m.axis)
            np.add.at(scores, m.units, np.asarray(self.score(matrix), dtype=np.float64)[m.indices])
        return scores

    @property
    def source(self) -> str:
        """The older name of :attr:`needs`: ``weight``, ``bn_scale`` or ``taylor``."""
        return {v: k for k, v in NEEDS.items()}[self.needs]


@dataclasses.dataclass(frozen=True)
class BNScaleCriterion(Criterion):
    """Scores the BatchNorm scales that follow the producers (Network Slimming)."""

    needs: ClassVar[str] = "bn_scales"

    def __call__(self, group, layers, layer_types):
        if not bn_members(group, layer_types):
            logger.warning("group %s has no BatchNorm: criterion %r falls back to l1_norm",
                           group.name, self.name)
            return CRITERIA["l1_norm"](group, layers, layer_types)
        return super().__call__(group, layers, layer_types)

    def members(self, group, layer_types):
        return bn_members(group, layer_types) or producer_members(group)


@dataclasses.dataclass(frozen=True)
class TaylorCriterion(Criterion):
    """Scores first-order Taylor terms accumulated over training batches, of the group's
    BatchNorm scales or else of its producers' weights (:mod:`slim_callbacks.engine.taylor`)."""

    needs: ClassVar[str] = "gradients"

    def members(self, group, layer_types):
        return bn_members(group, layer_types) or producer_members(group)

    def matrix(self, param, axis):
        return taylor_scores(param, axis).reshape(-1, 1)

    def stand_in(self) -> Criterion:
        """A weight-scored criterion with the same name and selector: it plans the same
        widths (not the same channels) and needs no training batches."""
        return Criterion(self.name, self.score, self.selector)


def l1_norm(matrix: np.ndarray) -> np.ndarray:
    """Sum of absolute values per row (arXiv 1608.08710)."""
    return np.abs(matrix).sum(axis=1)


def l2_norm(matrix: np.ndarray) -> np.ndarray:
    """Euclidean norm per row."""
    return np.sqrt(np.square(matrix).sum(axis=1))


def fpgm(matrix: np.ndarray) -> np.ndarray:
    """Sum of distances to all other rows (arXiv 1811.00250); rows near the geometric
    median score lowest. Vectorized: one float32 Gram matrix instead of a Python loop;
    rows are centred first (distances do not change) to keep cancellation small.
    BLAS runs on one thread: beside Paddle's OpenMP threads, more were slower."""
    m = matrix.astype(np.float32)
    m = m - m.mean(axis=0, keepdims=True)
    with threadpool_limits(1, user_api="blas"):
        gram = m @ m.T
    sq = np.diag(gram)  # from the Gram matrix itself, so self-distances are exactly 0
    dist2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)
    return np.sqrt(dist2, dtype=np.float64).sum(axis=1)


def bn_scale(matrix: np.ndarray) -> np.ndarray:
    """Absolute BatchNorm scale |gamma| (arXiv 1708.06519)."""
    return np.abs(matrix).sum(axis=1)


CRITERIA: Dict[str, Criterion] = {}
ALIASES = {"geometry_median": "fpgm", "bn_scale": "slim"}
#: ``register_criterion``'s ``source`` -> the :attr:`Criterion.needs` of its class
NEEDS = {"weight": "weights", "bn_scale": "bn_scales", "taylor": "gradients"}
KINDS = {"weight": Criterion, "bn_scale": BNScaleCriterion, "taylor": TaylorCriterion}


def register_criterion(name: Union[str, Criterion], score: Optional[ScoreFn] = None, *,
                       source: str = "weight", selector: Union[str, Selector] = "lowest") -> Criterion:
    """Adds a criterion (replacing one of the same name): a :class:`Criterion` object,
    or a name and a row-score function.

    Args:
        name: the name to use in ``prune(criterion=...)`` and recipes, or a
            :class:`Criterion` (its own name; ``score``, ``source`` and ``selector``
            are then not given).
        score: callable from a ``[channels, k]`` float matrix to ``[channels]`` scores.
        source: what ``score`` reads: ``"weight"``, ``"bn_scale"`` or ``"taylor"``
            (a ``[channels, 1]`` matrix of accumulated Taylor terms).
        selector: ``"lowest"``, ``"optimal_threshold"`` or a callable
            ``(scores, ratio, *, keep, min_keep) -> unit indices to remove`` (see
            :mod:`slim_callbacks.engine.selectors`).
    """
    if isinstance(name, Criterion):
        if score is not None:
            raise ConfigError("score", score, "None when a Criterion object is registered")
        CRITERIA[name.name] = name
        return name
    if not isinstance(name, str) or not name:
        raise ConfigError("name", name, "a non-empty string or a Criterion")
    if not callable(score):
        raise ConfigError("score", score, "a callable returning one score per channel")
    if source not in KINDS:
        raise ConfigError("source", source, f"one of {', '.join(KINDS)}")
    CRITERIA[name] = KINDS[source](name, score, selector)
    return CRITERIA[name]


def criterion_names() -> List[str]:
    """Every accepted name, in registration order, each followed by its aliases:
    ``['l1_norm', 'l2_norm', 'fpgm', 'geometry_median', 'slim', 'bn_scale', 'opt_slim',
    'taylor']``
    plus what :func:`register_criterion` added."""
    return [n for name in CRITERIA
            for n in [name] + [alias for alias, target in ALIASES.items() if target == name]]


def get_criterion(name, key: str = "criterion") -> Criterion:
    """The criterion registered as ``name`` (or an alias of it), or a ConfigError for ``key``."""
    if isinstance(name, Criterion):
        return name
    found = ALIASES.get(name, name) if isinstance(name, str) else None
    if found not in CRITERIA:
        raise ConfigError(key, name, f"one of {', '.join(criterion_names())}")
    return CRITERIA[found]


for _name, _fn in (("l1_norm", l1_norm), ("l2_norm", l2_norm), ("fpgm", fpgm)):
    register_criterion(_name, _fn)
register_criterion("slim", bn_scale, source="bn_scale")
register_criterion("opt_slim", bn_scale, source="bn_scale", selector="optimal_threshold")
register_criterion("taylor", l1_norm, source="taylor")  # scores are >= 0: their sum per unit
