"""Importance criteria: one score per channel, aggregated over a coupled group.

A criterion scores the rows of a ``[channels, -1]`` matrix: the producer's weights
(``source="weight"``) or the BatchNorm scales that follow it (``source="bn_scale"``).
Scores of every producer (or BatchNorm) of a group are summed per unit. Criteria never
edit the network.

Add your own with :func:`register_criterion`:

    >>> import numpy as np
    >>> criterion = register_criterion("max_abs", lambda w: np.abs(w).max(axis=1))
    >>> get_criterion("max_abs") is criterion, criterion.selector
    (True, 'lowest')
    >>> del CRITERIA["max_abs"]

The selector (which units go, given the scores) is a name of a built-in one or any
callable (see :mod:`slim_callbacks.engine.selectors`).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Dict, List, Union

import numpy as np
from threadpoolctl import threadpool_limits

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.engine.selectors import Selector, get_selector
from slim_callbacks.engine.taylor import taylor_scores
from slim_callbacks.tracing.groups import CHANNEL, OUT, ChannelGroup

logger = logging.getLogger(__name__)

ScoreFn = Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Criterion:
    """A named way to score channels.

    Attributes:
        name: registry name.
        score: maps a ``[channels, k]`` matrix to ``[channels]`` scores (low = prune).
        source: ``"weight"`` (producer weights) or ``"bn_scale"`` (BatchNorm gammas).
        selector: ``"lowest"`` (prune the lowest ``ratio`` share of channels),
            ``"optimal_threshold"`` (OptSlim: ``ratio`` bounds a share of sum(gamma^2))
            or a selector callable (see :mod:`slim_callbacks.engine.selectors`).
        select: the selector callable itself (``selector`` resolved),
            ``select(scores, ratio, *, keep, min_keep) -> unit indices to remove``.
    """

    name: str
    score: ScoreFn
    source: str = "weight"
    selector: Union[str, Selector] = "lowest"
    select: Selector = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "select", get_selector(self.selector))


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
SOURCES = ("weight", "bn_scale", "taylor")


def register_criterion(name: str, score: ScoreFn, *, source: str = "weight",
                       selector: Union[str, Selector] = "lowest") -> Criterion:
    """Adds a criterion under ``name`` (replacing one of the same name).

    Args:
        name: the name to use in ``prune(criterion=...)`` and recipes.
        score: callable from a ``[channels, k]`` float matrix to ``[channels]`` scores.
        source: ``"weight"``, ``"bn_scale"`` or ``"taylor"`` (``score`` gets a
            ``[channels, 1]`` matrix of accumulated Taylor terms, see
            :mod:`slim_callbacks.engine.taylor`).
        selector: ``"lowest"``, ``"optimal_threshold"`` or a callable
            ``(scores, ratio, *, keep, min_keep) -> unit indices to remove`` (see
            :mod:`slim_callbacks.engine.selectors`).
    """
    if not isinstance(name, str) or not name:
        raise ConfigError("name", name, "a non-empty string")
    if not callable(score):
        raise ConfigError("score", score, "a callable returning one score per channel")
    if source not in SOURCES:
        raise ConfigError("source", source, f"one of {', '.join(SOURCES)}")
    get_selector(selector)
    CRITERIA[name] = Criterion(name, score, source, selector)
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


def rows(param: np.ndarray, axis: int) -> np.ndarray:
    """The parameter as a ``[channels, -1]`` matrix, channels along ``axis``."""
    return np.moveaxis(param, axis, 0).reshape(param.shape[axis], -1)


def _bn_members(group: ChannelGroup, layer_types: Dict[str, str]):
    return [m for m in group.members if m.role == CHANNEL and m.attr == "weight"
            and "BatchNorm" in layer_types.get(m.layer, "")]


def _taylor_group_scores(group, layers, criterion, layer_types) -> np.ndarray:
    """Taylor terms of the group's BatchNorm scales, or of its producers' weights."""
    members = _bn_members(group, layer_types) or [
        m for m in group.members if m.role == OUT and m.attr == "weight"]
    scores = np.zeros(group.num_units, dtype=np.float64)
    for m in members:
        param = layers[m.layer]._parameters[m.attr]
        terms = taylor_scores(param, m.axis).reshape(-1, 1)
        np.add.at(scores, m.units, np.asarray(criterion.score(terms), dtype=np.float64)[m.indices])
    return scores


def group_scores(group: ChannelGroup, layers, criterion: Criterion,
                 layer_types: Dict[str, str]) -> np.ndarray:
    """One score per unit of ``group``, summed over its producers (or BatchNorms).

    Args:
        group: the coupled channels.
        layers: structural name -> layer, e.g. ``dict(network.named_sublayers())``.
        criterion: how to score.
        layer_types: structural name -> class name, from the trace.
    """
    if criterion.source == "taylor":
        return _taylor_group_scores(group, layers, criterion, layer_types)
    if criterion.source == "bn_scale":
        members = _bn_members(group, layer_types)
        if not members:
            logger.warning("group %s has no BatchNorm: criterion %r falls back to l1_norm",
                           group.name, criterion.name)
            criterion = CRITERIA["l1_norm"]
    if criterion.source == "weight":
        members = [m for m in group.members if m.role == OUT and m.attr == "weight"]
    scores = np.zeros(group.num_units, dtype=np.float64)
    for m in members:
        param = layers[m.layer]._parameters[m.attr].numpy()
        row_scores = np.asarray(criterion.score(rows(param, m.axis)), dtype=np.float64)
        np.add.at(scores, m.units, row_scores[m.indices])
    return scores
