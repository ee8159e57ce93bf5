"""Layer surgery: shrink parameters in place and keep the optimizer consistent.

Parameters keep their identity (the optimizer built by ``paddle.Model.prepare`` holds
these very objects): their storage is replaced with the kept slices. Every optimizer
accumulator and master weight shaped like the old parameter is sliced the same way
(Momentum's velocity, Adam's moments), because a stale Momentum velocity is silently
reused and a stale Adam moment fails. Gradients are dropped. Conv/BatchNorm attributes
follow the new shapes so ``print(net)``, ``paddle.summary`` and ``paddle.jit.save`` are
true. Nothing full-size is kept.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import paddle

from slim_callbacks.core.paddle_utils import (
    is_batch_norm,
    is_conv,
    is_layer_norm,
    is_prelu,
    is_transposed_conv,
)

logger = logging.getLogger(__name__)

# (layer name, attribute) -> {axis: kept indices}
Cuts = Dict[Tuple[str, str], Dict[int, np.ndarray]]


def concrete_place(place):
    """The typed place (CPUPlace, CUDAPlace) that ``DenseTensor.set`` accepts."""
    if place.is_gpu_place():
        return paddle.CUDAPlace(place.gpu_device_id())
    return paddle.CPUPlace()


def set_storage(tensor, array: np.ndarray) -> None:
    """Replaces a tensor's data (and shape) in place, keeping the Python object."""
    tensor.value().get_tensor().set(np.ascontiguousarray(array), concrete_place(tensor.place))


def take(array: np.ndarray, kept: Dict[int, np.ndarray]) -> np.ndarray:
    for axis, index in sorted(kept.items()):
        array = np.take(array, np.asarray(index, dtype=np.int64), axis=axis)
    return array


def optimizer_states(optimizer, param) -> Iterator[paddle.Tensor]:
    """Accumulators and master weights of ``param`` shaped like it."""
    if optimizer is None:
        return
    shape = list(param.shape)
    for per_param in getattr(optimizer, "_accumulators", {}).values():
        state = per_param.get(param.name)
        if state is not None and list(state.shape) == shape:
            yield state
    master = getattr(optimizer, "_master_weights", {}).get(param.name)
    if master is not None and list(master.shape) == shape:
        yield master


def conv_attributes(layer) -> dict:
    return {k: getattr(layer, k) for k in ("_in_channels", "_out_channels", "_groups")}


def update_attributes(layer, before: Optional[dict]) -> None:
    """Makes a layer's channel attributes match its (new) weight shapes.

    A conv weight is ``[C_out, C_in / groups, k...]``, a transposed conv's
    ``[C_in, C_out / groups, k...]``; a depthwise conv keeps ``groups == C_in``.
    """
    if is_conv(layer):
        depthwise = before["_groups"] > 1 and before["_groups"] == before["_in_channels"]
        shape = layer.weight.shape
        if is_transposed_conv(layer):
            groups = shape[0] if depthwise else layer._groups
            in_channels, out_channels = shape[0], shape[1] * groups
        else:
            multiplier = before["_out_channels"] // before["_in_channels"]
            groups = shape[0] // multiplier if depthwise else layer._groups
            in_channels, out_channels = shape[1] * groups, shape[0]
        layer._in_channels, layer._out_channels, layer._groups = in_channels, out_channels, groups
    elif is_batch_norm(layer) and hasattr(layer, "_num_features"):
        layer._num_features = layer._mean.shape[0]
    elif is_prelu(layer):
        layer._num_parameters = layer._weight.shape[0]
    elif is_layer_norm(layer):
        layer._normalized_shape = [layer.weight.shape[0]]


@contextlib.contextmanager
def rollback_on_error(layers: Dict[str, paddle.nn.Layer], cuts: Cuts, optimizer) -> Iterator[None]:
    """Restores every touched tensor and attribute if the block raises."""
    saved: List[Tuple[paddle.Tensor, np.ndarray]] = []
    attrs = {}
    for name, attr in cuts:
        param = layers[name]._parameters[attr]
        saved.append((param, param.numpy()))
        saved.extend((s, s.numpy()) for s in optimizer_states(optimizer, param))
        attrs.setdefault(name, dict(vars(layers[name])))
    try:
        yield
    except BaseException:
        for tensor, array in saved:
            set_storage(tensor, array)
        for name, state in attrs.items():
            for key in ("_in_channels", "_out_channels", "_groups", "_num_features",
                        "_num_parameters", "_normalized_shape"):
                if key in state:
                    setattr(layers[name], key, state[key])
        raise


def apply_cuts(layers: Dict[str, paddle.nn.Layer], cuts: Cuts, optimizer=None) -> None:
    """Keeps only the given indices of every listed parameter, in place.

    Args:
        layers: structural name -> layer.
        cuts: (layer, attribute) -> {axis: kept indices}.
        optimizer: the optimizer training these parameters, if any.
    """
    before = {name: conv_attributes(layers[name]) for name, _ in cuts if is_conv(layers[name])}
    for (name, attr), kept in cuts.items():
        param = layers[name]._parameters[attr]
        for state in list(optimizer_states(optimizer, param)):
            set_storage(state, take(state.numpy(), kept))
        set_storage(param, take(param.numpy(), kept))
        param.clear_gradient(False)
    for name in dict.fromkeys(name for name, _ in cuts):
        update_attributes(layers[name], before.get(name))
