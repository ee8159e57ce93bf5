"""``model.inputs``: a recipe's example inputs of any number and dtype.

A recipe names its network's inputs as ``model.inputs``, a list of ``{name, shape,
dtype}`` (positional arguments of ``forward`` in that order; ``dtype`` defaults to
``float32``), instead of the one float32 ``input_shape``. The engine gets them as
example inputs (:mod:`slim_callbacks.core.example_inputs`). An input may also say
which ``values`` synthetic data draws for it, ``[low, high]``: integers ``low`` to
``high - 1`` (token ids below the vocabulary size), floats uniform in between (default:
integers 0, floats standard normal).

Examples:
    >>> INPUTS.convert([{"name": "image", "shape": [1, 3, 32, 32]},
    ...                 {"name": "ids", "shape": [1, 16], "dtype": "int64"}], "model.inputs")[1]
    {'name': 'ids', 'shape': [1, 16], 'dtype': 'int64'}
"""
from __future__ import annotations

from typing import Mapping

from slim_callbacks.app.rules import Invalid, Rule
from slim_callbacks.core.checks import is_int, is_real
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.example_inputs import DTYPES, SHAPE_ALLOWED

KEYS = ("name", "shape", "dtype", "values")
#: the data sources that can feed ``model.inputs`` (:mod:`slim_callbacks.app.input_data`)
INPUT_SOURCES = ("synthetic",)
INTEGER = ("int64", "int32", "int16", "int8", "uint8")
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
    out = {"name": name, "shape": [int(d) for d in shape], "dtype": dtype}
    if "values" in entry:
        out["values"] = _values(entry["values"], dtype, f"{where}.values")
    return out


def _values(values, dtype: str, where: str) -> list:
    """``[low, high]`` with low < high (ints for an integer dtype)."""
    number = is_int if dtype in INTEGER else is_real
    if not isinstance(values, (list, tuple)) or len(values) != 2 or \
            not all(number(v) for v in values) or not values[0] < values[1]:
        kind = "ints" if dtype in INTEGER else "numbers"
        raise ConfigError(where, values, f"[low, high], two {kind} with low < high "
                          f"(the values synthetic data draws for a {dtype} input)")
    return [int(v) if dtype in INTEGER else float(v) for v in values]


def _convert(value, path):
    if not isinstance(value, (list, tuple)) or not value:
        raise Invalid
    entries = tuple(_entry(entry, i, path) for i, entry in enumerate(value))
    names = [e["name"] for e in entries]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}[*].name", names, "distinct names")
    return entries


INPUTS = Rule(f"a non-empty list of inputs {{name, shape, dtype}}, e.g. {EXAMPLE}", _convert)


def check_with_inputs(inputs, input_shape, source: str) -> None:
    """A recipe with ``model.inputs`` has no ``input_shape`` and a source that feeds them."""
    if inputs is None:
        return
    if input_shape is not None:
        raise ConfigError("input_shape", list(input_shape), "null when model.inputs is given "
                          "(model.inputs names every input, with its shape)")
    if source not in INPUT_SOURCES:
        raise ConfigError("data.source", source, f"{' or '.join(INPUT_SOURCES)} when "
                          "model.inputs is given (the other sources give images only)")
