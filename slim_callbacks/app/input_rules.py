"""``model.inputs``: a recipe's example inputs of any number and dtype.

A recipe names its network's inputs as ``model.inputs``, a list of ``{name, shape,
dtype}`` (positional arguments of ``forward`` in that order; ``dtype`` defaults to
``float32``), instead of the one float32 ``input_shape``. The engine gets them as
example inputs (:mod:`slim_callbacks.core.example_inputs`).

Example:
    >>> INPUTS.convert([{"name": "image", "shape": [1, 3, 32, 32]},
    ...                 {"name": "ids", "shape": [1, 16], "dtype": "int64"}], "model.inputs")[1]
    {'name': 'ids', 'shape': [1, 16], 'dtype': 'int64'}
"""
from __future__ import annotations

from typing import Mapping

from slim_callbacks.app.rules import Invalid, Rule
from slim_callbacks.core.checks import is_int
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.example_inputs import DTYPES, SHAPE_ALLOWED

KEYS = ("name", "shape", "dtype")
EXAMPLE = ("[{name: image, shape: [1, 3, 32, 32]}, "
           "{name: ids, shape: [1, 16], dtype: int64}]")


def _entry(entry, i: int, path: str) -> dict:
    where = f"{path}[{i}]"
    if not isinstance(entry, Mapping):
        raise ConfigError(where, entry, f"an input {{name, shape, dtype}}, e.g. {EXAMPLE}")
    for key in entry:
        if key not in KEYS:
            raise ConfigError(f"{where}.{key}", entry[key], f"a key of an input: {', '.join(KEYS)}")
    name, shape, dtype = entry.get("name", f"x{i}"), entry.get("shape"), entry.get("dtype", "float32")
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError(f"{where}.name", name, "an identifier (forward's argument name)")
    if not isinstance(shape, (list, tuple)) or not shape or any(not is_int(d) or d < 1 for d in shape):
        raise ConfigError(f"{where}.shape", shape, SHAPE_ALLOWED)
    if dtype not in DTYPES:
        raise ConfigError(f"{where}.dtype", dtype, f"one of {', '.join(DTYPES)}")
    return {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}


def _convert(value, path):
    if not isinstance(value, (list, tuple)) or not value:
        raise Invalid
    entries = tuple(_entry(entry, i, path) for i, entry in enumerate(value))
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}[*].name", names, "distinct names")
    return entries


INPUTS = Rule(f"a non-empty list of inputs {{name, shape, dtype}}, e.g. {EXAMPLE}", _convert)
