"""The tensors among an op's arguments: finding them (:func:`tensors_in`) and swapping
them for their channel labels (:func:`swap_tensors`), so an op can be run on labels.
"""
from __future__ import annotations

import numpy as np
import paddle

from slim_callbacks.tracing import labels as L

EXACT_FLOAT32 = 2**24  # every integer below it is a float32


def tensors_in(obj):
    """Every Tensor in ``obj`` (nested lists, tuples and dict values), depth first."""
    if isinstance(obj, paddle.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from tensors_in(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from tensors_in(item)


def swap_tensors(obj, inputs, in_labels):
    """A copy of ``obj`` with each input tensor replaced by its labels as floats: float32,
    exact below 2**24 (half the memory and copying of float64, used beyond)."""
    if isinstance(obj, paddle.Tensor):
        for t, lab in zip(inputs, in_labels):
            if t is obj and (t.is_floating_point() or L.atoms(lab).size):
                exact = "float32" if lab.size == 0 or int(lab.max()) < EXACT_FLOAT32 else "float64"
                return paddle.to_tensor(np.broadcast_to(lab, t.shape).astype(exact))
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(swap_tensors(o, inputs, in_labels) for o in obj)
    if isinstance(obj, dict):
        return {k: swap_tensors(v, inputs, in_labels) for k, v in obj.items()}
    return obj
