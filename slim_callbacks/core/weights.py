"""Weight files: ``.safetensors`` (the safe format) and ``.pdparams`` (Paddle's pickle).

A ``.pdparams`` file is a Python pickle: loading a crafted one runs code. A
``.safetensors`` file holds only tensors and a JSON header, so prefer it for weights
you did not make yourself. Both hold a state dict ``{structural key: tensor}``.

Examples:
    >>> import os, tempfile, paddle
    >>> net = paddle.nn.Linear(2, 3)
    >>> path = save_safetensors(net, os.path.join(tempfile.mkdtemp(), "w.safetensors"))
    >>> sorted(load_state(path))
    ['bias', 'weight']
"""
from __future__ import annotations

import hashlib
import os
from typing import Dict, Mapping, Union

import numpy as np
import paddle

from slim_callbacks.core.errors import ConfigError, SlimError

WEIGHT_SUFFIXES = (".safetensors", ".pdparams")
ALLOWED = "a .safetensors file (safe) or a .pdparams file (a pickle: only from a source you trust)"


def save_safetensors(weights: Union[paddle.nn.Layer, Mapping[str, paddle.Tensor]], path: str) -> str:
    """Writes a network's state dict (or a state dict) as ``.safetensors``; returns ``path``."""
    from safetensors.paddle import save_file
    state = weights.state_dict() if isinstance(weights, paddle.nn.Layer) else weights
    save_file({key: tensor.contiguous() for key, tensor in state.items()}, path)
    return path


def load_state(path: str, key: str = "weights") -> Dict[str, paddle.Tensor]:
    """The state dict in ``path`` (``.safetensors`` or ``.pdparams``, by suffix).

    Raises:
        ConfigError: another suffix, or a file that is not a state dict of that format,
            naming ``key`` (e.g. ``model.pretrained``).
        SlimError: no file at ``path``.
    """
    suffix = os.path.splitext(path)[1]
    if suffix not in WEIGHT_SUFFIXES:
        raise ConfigError(key, path, ALLOWED)
    if not os.path.isfile(path):
        raise SlimError(f"{key}: {path} not found; expected {ALLOWED}")
    try:
        if suffix == ".safetensors":
            from safetensors.paddle import load_file
            state = load_file(path)
        else:
            state = paddle.load(path)
    except Exception as err:  # each format fails in its own way on a foreign file
        raise ConfigError(key, path, f"a readable {suffix} state dict ({err})") from None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ConfigError(key, path, f"a {suffix} state dict {{key: tensor}}")
    return state


def state_digest(state: Mapping[str, paddle.Tensor]) -> str:
    """sha256 of a state dict's names, dtypes, shapes and values, whatever file held it
    (a ``.safetensors`` copy of a ``.pdparams`` has the same digest)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        value = state[key]
        array = np.ascontiguousarray(value.numpy() if hasattr(value, "numpy") else value)
        digest.update(f"{key}:{array.dtype.str}:{list(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()
