"""Rules for ops that work along given axes: spatial resampling per channel plane
(:func:`spatial`, along a ``data_format`` axis), reductions (:func:`reduction`), and
``roll``/``index_select``/``gather``/``flip`` (:func:`along_fixed_axes`), which move or
pick positions by fixed amounts.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L


def spatial(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """Pooling, resampling: each channel plane stays itself along the ``data_format``
    channel axis; an output that mixes that axis blocks the channels."""
    fmt = next((a for a in args if isinstance(a, str) and a in L.DATA_FORMATS), "NCHW")
    axis = L.DATA_FORMATS[fmt]
    x = inputs[0]
    vector = L.channel_vector(in_labels[0], axis, x.shape[axis])
    for t in outputs:
        if vector is None or t.ndim != x.ndim or t.shape[axis] != x.shape[axis]:
            if L.atoms(in_labels[0]).size and t is outputs[0]:
                tr.block(in_labels[0], f"is resampled across channels by {op} in {tr.where()}")
            tr.set_labels(t, L.zeros(t.ndim))
        else:
            tr.set_labels(t, L.along(vector, axis, t.ndim))


def reduction(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """A reduction along ``axis``: channels along the other axes pass through. One over
    channels blocks them, except a sum (removing dead channels leaves it as it was)
    and a mean over the channels alone (a hand-written LayerNorm: approximate)."""
    x, lab = inputs[0], in_labels[0]
    axes = kwargs.get("axis", args[1] if len(args) > 1 else None)
    if isinstance(axes, paddle.Tensor):
        axes = axes.tolist()
    if axes is None or axes == []:
        axes = list(range(x.ndim))
    axes = [int(a) % x.ndim for a in (axes if isinstance(axes, (list, tuple)) else [axes])]
    out = outputs[0]
    if L.varies_along(lab, axes):
        others = [ax for ax in range(x.ndim) if ax not in axes]
        if op == "mean" and not L.varies_along(lab, others):
            # a hand-written LayerNorm (ConvNeXt's channels-first one): like LayerNorm
            tr.approximate(lab, f"{op} over channels in {tr.where()} is then taken over "
                                f"fewer channels")
        elif op != "sum" or L.varies_along(lab, others):
            tr.block(lab, f"is mixed across channels by {op} in {tr.where()}")
        # a sum over channels loses nothing when dead channels are removed
        tr.set_labels(out, L.zeros(out.ndim))
        return
    if out.ndim == x.ndim:
        tr.set_labels(out, lab)
    elif out.ndim == x.ndim - len(axes):
        tr.set_labels(out, np.squeeze(lab, axis=tuple(axes)))
    else:
        tr.set_labels(out, L.zeros(out.ndim))


def along_fixed_axes(tr, op, func, args, kwargs, inputs, in_labels, outputs):
    """``roll``, ``index_select``, ``gather``, ``flip``: positions move or are picked
    along some axes by fixed amounts or indices. Channels pass through if they do not
    vary along those axes (Swin's shifted windows roll H and W); otherwise the fixed
    numbers would pick other channels once some are removed."""
    x, lab, out = inputs[0], in_labels[0], outputs[0]
    axes = kwargs.get("axis", args[AXIS_ARG[op]] if len(args) > AXIS_ARG[op] else None)
    if isinstance(axes, paddle.Tensor):
        axes = axes.tolist()
    axes = list(range(x.ndim)) if axes is None else axes if isinstance(axes, (list, tuple)) else [axes]
    if out.ndim != x.ndim or L.varies_along(lab, [int(a) for a in axes]):
        tr.refuse(lab, f"is moved or picked by {op} along its channel axis in {tr.where()}")
        tr.set_labels(out, L.zeros(out.ndim))
        return
    tr.set_labels(out, lab)


AXIS_ARG = {"roll": 2, "index_select": 2, "gather": 2, "flip": 1}  # op -> position of its axis argument
