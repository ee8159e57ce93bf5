"""Channel labels: which producer channel (atom) each element of a tensor comes from.

A label array is an ``int64`` numpy array broadcastable to its tensor's shape: axes
along which the labels do not change are kept at size 1, so a ``[N, C, H, W]``
activation costs ``C`` integers. ``0`` means "no channel" (the input image,
constants, padding).

This module holds the pure array logic; :mod:`slim_callbacks.tracing.op_rules` decides
which rule applies to which Paddle op.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

# Ops whose output element i depends only on input element i (same shape).
ELEMENTWISE = frozenset("""
relu relu6 sigmoid hardsigmoid hardswish swish silu gelu tanh leaky_relu elu selu celu
mish softplus softsign hardtanh hardshrink softshrink tanh_shrink thresholded_relu
logsigmoid exp expm1 log log1p log2 log10 sqrt rsqrt abs square pow scale cast clip
assign dropout sign floor ceil round reciprocal sin cos erf isnan isinf isfinite
logical_not clone detach
""".split())
# Elementwise ops on two broadcast operands.
BINARY = frozenset("""
add subtract multiply divide maximum minimum elementwise_pow fmax fmin remainder
floor_divide greater_than greater_equal less_than less_equal equal not_equal
logical_and logical_or where_ heaviside
""".split())
# Ops that only move elements around: labels follow by applying the op to them.
MOVEMENT = frozenset("""
reshape flatten squeeze unsqueeze transpose concat split split_with_num getitem slice
strided_slice expand expand_as tile unbind
""".split())
# Ops that work on each channel plane separately (pooling, resizing, padding).
SPATIAL = frozenset("""
pool2d pool3d max_pool2d_with_index max_pool3d_with_index lp_pool2d bilinear_interp
nearest_interp bicubic_interp linear_interp trilinear_interp pad3d
""".split())
# Reductions along the given axes (and softmax, which normalizes along one).
REDUCTION = frozenset("mean sum max min amax amin prod logsumexp argmax argmin "
                      "softmax log_softmax cumsum".split())
# Ops whose output carries no channel data of its input.
NO_DATA = frozenset("shape shape64 numel".split())
# Ops whose output has its input's shape, so it shrinks with the input's channels.
SHAPE_LIKE = frozenset("full_like zeros_like ones_like empty_like".split())
# Ops that create tensors from nothing.
CREATION = frozenset("full gaussian uniform arange linspace full_int_array empty "
                     "randint randperm assign_value full_with_tensor eye".split())

DATA_FORMATS = {"NCHW": 1, "NCL": 1, "NCDHW": 1, "NC": 1,
                "NHWC": -1, "NLC": -1, "NDHWC": -1}


def zeros(ndim: int) -> np.ndarray:
    """Labels of a tensor that carries no channel."""
    return np.zeros([1] * ndim, dtype=np.int64)


def compress(labels: np.ndarray) -> np.ndarray:
    """Shrinks every axis along which ``labels`` do not change to size 1."""
    for axis in range(labels.ndim):
        if labels.shape[axis] > 1:
            first = labels.take([0], axis=axis)
            if np.array_equal(np.broadcast_to(first, labels.shape), labels):
                labels = first
    return np.ascontiguousarray(labels)


def atoms(labels: np.ndarray) -> np.ndarray:
    """The distinct atoms (non-zero labels) present."""
    values = np.unique(labels)
    return values[values > 0]


def channel_vector(labels: np.ndarray, axis: int, size: int) -> Optional[np.ndarray]:
    """One label per position along ``axis``, or None if a position mixes atoms.

    Zeros (padding) next to a single atom are fine: a padded channel is still one
    channel.

    >>> channel_vector(np.array([[[1, 0], [2, 2]]]), axis=1, size=2).tolist()
    [1, 2]
    """
    axis = axis % labels.ndim
    moved = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1)
    high = moved.max(axis=1)
    low = np.where(moved > 0, moved, np.iinfo(np.int64).max).min(axis=1)
    if np.any((high > 0) & (low != high)):
        return None
    return np.broadcast_to(high, (size,)).copy()


def along(vector: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """Labels that vary along ``axis`` only, as ``vector`` says."""
    shape = [1] * ndim
    shape[axis % ndim] = len(vector)
    return vector.reshape(shape)


def broadcast_pair(a: np.ndarray, b: np.ndarray, ndim: int) -> Tuple[np.ndarray, np.ndarray]:
    """Aligns two label arrays to ``ndim`` axes and broadcasts them."""
    a = a.reshape((1,) * (ndim - a.ndim) + a.shape)
    b = b.reshape((1,) * (ndim - b.ndim) + b.shape)
    return np.broadcast_arrays(a, b)


def label_pairs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distinct ``(atom_a, atom_b)`` pairs that meet at the same element."""
    both = (a > 0) & (b > 0) & (a != b)
    if not both.any():
        return np.zeros((0, 2), dtype=np.int64)
    return np.unique(np.stack([a[both], b[both]], axis=1), axis=0)


def varies_along(labels: np.ndarray, axes: Sequence[int]) -> bool:
    """True if the compressed labels change along any of ``axes``."""
    return any(labels.shape[ax % labels.ndim] > 1 for ax in axes)


def reshape_groups(in_shape: Sequence[int], out_shape: Sequence[int]) -> List[Tuple[list, list]]:
    """Pairs of (input axes, output axes) whose sizes multiply to the same number.

    >>> reshape_groups([1, 8, 4], [1, 2, 4, 4])
    [([0], [0]), ([1], [1, 2]), ([2], [3])]
    """
    groups, i, j = [], 0, 0
    while i < len(in_shape) or j < len(out_shape):
        gi, go, pi, po = [], [], 1, 1
        if i < len(in_shape):
            pi, i = in_shape[i], i + 1
            gi.append(i - 1)
        if j < len(out_shape):
            po, j = out_shape[j], j + 1
            go.append(j - 1)
        while pi != po:
            if pi < po and i < len(in_shape):
                pi, i = pi * in_shape[i], i + 1
                gi.append(i - 1)
            elif po < pi and j < len(out_shape):
                po, j = po * out_shape[j], j + 1
                go.append(j - 1)
            else:
                break
        groups.append((gi, go))
    return groups


def factorized_columns(in_labels: np.ndarray, in_shape, out_shape, skip=()) -> List[np.ndarray]:
    """Atoms that a reshape splitting a labelled axis into several ties together.

    Splitting ``C`` channels into ``[g, C // g]`` (a channel shuffle) only survives
    pruning if every one of the ``g`` rows loses the same columns: the code computes
    ``C // g`` at run time and keeps ``g``. So the atoms in each column are coupled.

    Args:
        skip: indices (into :func:`reshape_groups`) of axis groups to leave alone.

    Returns:
        One array of atoms per column that has to be pruned as one.
    """
    full = np.broadcast_to(in_labels, in_shape)
    columns = []
    for i, (in_axes, out_axes) in enumerate(reshape_groups(list(in_shape), list(out_shape))):
        sizes = [out_shape[a] for a in out_axes if out_shape[a] > 1]
        if i in skip or len(in_axes) != 1 or len(sizes) < 2 or not varies_along(in_labels, in_axes):
            continue
        moved = np.moveaxis(full, in_axes[0], -1).reshape(-1, in_shape[in_axes[0]])[0]
        grid = moved.reshape(-1, sizes[-1])
        columns.extend(grid[:, k] for k in range(grid.shape[1]))
    return columns


def is_merge_or_split(in_labels: np.ndarray, in_shape, out_shape) -> bool:
    """True if every labelled axis is kept, merged with others or split alone.

    Anything else (a labelled axis split and merged at once) has no safe
    interpretation after pruning.
    """
    for in_axes, out_axes in reshape_groups(list(in_shape), list(out_shape)):
        if not varies_along(in_labels, in_axes):
            continue
        nontrivial_out = [a for a in out_axes if out_shape[a] > 1]
        if len(in_axes) > 1 and len(nontrivial_out) > 1:
            return False
    return True
