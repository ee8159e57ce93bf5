"""Example inputs of any structure: what the engine feeds a network to trace, count,
verify and export it.

Every entry point takes ``example_inputs`` (and, as the shorthand for one float32
tensor, ``input_shape``); :func:`as_inputs` turns any of these into one
:class:`ExampleInputs`:

- a shape, ``[1, 3, 224, 224]``: one float32 tensor (the shorthand);
- a ``paddle.Tensor`` or numpy array: a real input, fed as it is;
- a ``paddle.static.InputSpec`` or a leaf dict ``{"shape": [1, 12], "dtype": "int64"}``
  (``None``/``-1`` dims become 1);
- a tuple or list of these: positional arguments, ``network(*inputs)``;
- a dict of these: keyword arguments, ``network(**inputs)`` (a network whose
  ``forward`` takes one dict takes ``[{...}]``, a list holding the dict);
- nested freely; other values (``None``, numbers, strings) are passed as they are.

Fresh tensors have the right dtype: floats are zeros or standard normal, integers and
bools are zeros (valid token ids and indices). A ``forward_fn(network, inputs)``
says how to call the network instead (a detector's loss forward with targets in
train mode: check ``network.training``).

Examples:
    >>> import paddle
    >>> inputs = as_inputs({"image": [1, 3, 8, 8], "ids": {"shape": [1, 4], "dtype": "int64"}})
    >>> inputs.describe(), inputs.batch
    ('{image: float32[1, 3, 8, 8], ids: int64[1, 4]}', 1)
    >>> as_inputs(inputs.to_data()) == inputs, as_inputs([2, 3, 8, 8]).shape
    (True, [2, 3, 8, 8])
    >>> class Two(paddle.nn.Layer):
    ...     def forward(self, image, ids):
    ...         return image.mean() + ids.sum()
    >>> float(inputs.call(Two()))
    0.0
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Callable, List, Optional, Tuple

import numpy as np
import paddle

from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import model_example_inputs

DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8",
          "uint8", "bool")
SHAPE_ALLOWED = "a list of positive ints, batch first, e.g. [1, 3, 224, 224]"
ALLOWED = ("a list of positive ints, batch first, e.g. [1, 3, 224, 224] (one float32 "
           "input); or a paddle.Tensor, an InputSpec, {'shape': [...], 'dtype': ...}, or a "
           "tuple, list or dict of these")
CONSTANTS = (type(None), bool, int, float, str)


def dtype_name(dtype) -> str:
    """``'int64'`` for ``paddle.int64``, ``np.int64``, ``'int64'``; ConfigError if unknown."""
    try:
        from paddle.base.data_feeder import convert_dtype
        name = convert_dtype(dtype)
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES:
        raise ConfigError("dtype", dtype, f"one of {', '.join(DTYPES)}")
    return name


@dataclasses.dataclass(frozen=True, eq=False)
class Leaf:
    """One input tensor: its ``shape`` and ``dtype`` (and ``name``), or a real
    ``value`` (a numpy array) fed as it is."""

    shape: Tuple[int, ...]
    dtype: str = "float32"
    name: Optional[str] = None
    value: Optional[np.ndarray] = None

    def __eq__(self, other):
        return (isinstance(other, Leaf) and (self.shape, self.dtype, self.name) ==
                (other.shape, other.dtype, other.name)
                and (self.value is None) == (other.value is None)
                and (self.value is None or np.array_equal(self.value, other.value)))

    def make(self, fill: str = "zeros") -> paddle.Tensor:
        if self.value is not None:
            return paddle.to_tensor(self.value)
        if fill == "randn" and self.dtype.startswith(("float", "bfloat")):
            return paddle.randn(list(self.shape), dtype="float32").astype(self.dtype)
        return paddle.zeros(list(self.shape), dtype=self.dtype)

    def with_batch(self, n: int) -> "Leaf":
        if not self.shape:
            return self
        value = None if self.value is None else self.value[np.arange(n) % len(self.value)]
        return Leaf((n, *self.shape[1:]), self.dtype, self.name, value)

    def to_data(self) -> dict:
        data = {"shape": list(self.shape), "dtype": self.dtype}
        return {**data, "name": self.name} if self.name else data

    def describe(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


def _map(tree, leaf_fn, const_fn=lambda v: v):
    """``tree`` with ``leaf_fn`` applied to each :class:`Leaf` (and ``const_fn`` to the rest)."""
    if isinstance(tree, Leaf):
        return leaf_fn(tree)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(t, leaf_fn, const_fn) for t in tree)
    if isinstance(tree, dict):
        return {k: _map(v, leaf_fn, const_fn) for k, v in tree.items()}
    return const_fn(tree)


def _leaves(tree) -> List[Leaf]:
    out: List[Leaf] = []
    _map(tree, out.append)
    return out


class ExampleInputs:
    """Example inputs of a network (build with :func:`as_inputs`; see the module
    docstring). ``tree`` holds :class:`Leaf` objects where tensors go."""

    def __init__(self, tree, forward_fn: Optional[Callable] = None):
        self.tree = tree
        self.forward_fn = forward_fn

    def __eq__(self, other):
        return isinstance(other, ExampleInputs) and self.tree == other.tree

    def __repr__(self):
        return f"ExampleInputs({self.describe()})"

    # -- what they are --------------------------------------------------------------
    def leaves(self) -> List[Leaf]:
        """Every input tensor, depth first."""
        return _leaves(self.tree)

    @property
    def batch(self) -> int:
        """The batch size: the first axis of the first input (1 without one)."""
        first = next((leaf for leaf in self.leaves() if leaf.shape), None)
        return int(first.shape[0]) if first else 1

    @property
    def shape(self) -> Optional[List[int]]:
        """The shape of the one float32 input made fresh (the ``input_shape`` shorthand),
        else None."""
        tree = self.tree
        if isinstance(tree, Leaf) and tree.dtype == "float32" and tree.value is None:
            return list(tree.shape)
        return None

    @property
    def argument(self) -> str:
        """The argument name that errors speak of: ``input_shape`` for the shorthand."""
        return "input_shape" if self.shape is not None else "example_inputs"

    def describe(self) -> str:
        """``[1, 3, 8, 8]`` for the shorthand, else e.g. ``(float32[1, 3, 8, 8], int64[1, 4])``."""
        return str(self.shape) if self.shape is not None else _describe(self.tree)

    # -- feeding a network ----------------------------------------------------------
    def tensors(self, fill: str = "zeros"):
        """Fresh input tensors in the inputs' structure (``fill``: ``zeros`` or
        ``randn`` for floats; integers are always zeros)."""
        return _map(self.tree, lambda leaf: leaf.make(fill))

    def run(self, network, tensors):
        """Calls ``network`` on ``tensors`` (from :meth:`tensors`): ``forward_fn`` if
        given, else positional for a tuple or list, keywords for a dict."""
        if self.forward_fn is not None:
            return self.forward_fn(network, tensors)
        if isinstance(self.tree, dict):
            return network(**tensors)
        if isinstance(self.tree, (list, tuple)):
            return network(*tensors)
        return network(tensors)

    def call(self, network, fill: str = "zeros"):
        """``network``'s outputs on fresh inputs (see :meth:`run`)."""
        return self.run(network, self.tensors(fill))

    def rejected(self, err: Exception, mode: str) -> SlimError:
        """The SlimError for a forward pass in ``mode`` that raised ``err``."""
        hint = ""
        if mode == "train" and self.forward_fn is None:
            hint = ("; if its train-mode forward needs more inputs (targets, labels), pass "
                    "them in example_inputs (a real batch or a dict with every field) or "
                    "pass forward_fn=lambda network, inputs: ... that calls the network "
                    "in train mode")
        return SlimError(f"{self.argument} {self.describe()} was rejected by the network in "
                         f"{mode} mode: {type(err).__name__}: {err}{hint}")

    # -- other forms ----------------------------------------------------------------
    def with_batch(self, n: int) -> "ExampleInputs":
        """The same inputs with batch ``n`` (real values repeat or are cut)."""
        return ExampleInputs(_map(self.tree, lambda leaf: leaf.with_batch(int(n))), self.forward_fn)

    def with_forward(self, forward_fn: Optional[Callable]) -> "ExampleInputs":
        """These inputs, called through ``forward_fn`` if given."""
        return self if check_forward_fn(forward_fn) is None else ExampleInputs(self.tree, forward_fn)

    def input_specs(self, network=None, dynamic_batch: bool = False) -> list:
        """``paddle.static.InputSpec``s of the forward's positional arguments (for
        ``paddle.jit.save``): a dict's keys in the order of ``network.forward``'s
        parameters when it names them all."""
        def spec(leaf, name):
            shape = list(leaf.shape)
            if dynamic_batch and shape:
                shape[0] = None
            return paddle.static.InputSpec(shape, leaf.dtype, leaf.name or name)

        def specs(tree, name):
            if isinstance(tree, Leaf):
                return spec(tree, name)
            if isinstance(tree, dict):
                return {k: specs(v, k) for k, v in tree.items()}
            if isinstance(tree, (list, tuple)):
                return [specs(v, f"{name}_{i}") for i, v in enumerate(tree)]
            return tree
        tree = self.tree
        if isinstance(tree, Leaf):
            return [specs(tree, "x")]
        if isinstance(tree, dict):
            return [specs(tree[k], k) for k in _forward_order(network, list(tree))]
        return [specs(v, f"x{i}" if i else "x") for i, v in enumerate(tree)]

    def signature(self):
        """The structure with each input's dtype and shape past the batch (values and
        names left out): two batches of the same inputs have the same signature."""
        def sig(tree):
            if isinstance(tree, Leaf):
                return tree.dtype, tree.shape[1:]
            if isinstance(tree, dict):
                return {k: sig(v) for k, v in tree.items()}
            return [sig(v) for v in tree] if isinstance(tree, (list, tuple)) else tree
        return sig(self.tree)

    def ordered_leaves(self, network=None) -> List[Leaf]:
        """The inputs in the order :meth:`input_specs` saves them."""
        tree = self.tree
        if isinstance(tree, dict):
            tree = [tree[k] for k in _forward_order(network, list(tree))]
        return _leaves(tree)

    def of_arrays(self, network, arrays) -> "ExampleInputs":
        """These inputs holding ``arrays`` (in :meth:`ordered_leaves` order) as values."""
        values = {id(leaf): a for leaf, a in zip(self.ordered_leaves(network), arrays)}
        return ExampleInputs(_map(self.tree, lambda leaf: Leaf(
            tuple(values[id(leaf)].shape), leaf.dtype, leaf.name, values[id(leaf)])), self.forward_fn)

    def to_data(self):
        """Plain data (lists, dicts, ints, strings) that :func:`as_inputs` reads back:
        the shape itself for the shorthand. Real values keep only shape and dtype."""
        if self.shape is not None:
            return self.shape
        return _map(self.tree, Leaf.to_data)


def check_forward_fn(forward_fn: Optional[Callable]) -> Optional[Callable]:
    """None or a callable ``(network, inputs) -> outputs``."""
    if forward_fn is not None and not callable(forward_fn):
        raise ConfigError("forward_fn", forward_fn, "None or a callable(network, inputs) "
                          "returning the network's outputs")
    return forward_fn


def _forward_order(network, keys: List[str]) -> List[str]:
    try:
        params = list(inspect.signature(network.forward).parameters)
    except (TypeError, ValueError, AttributeError):
        return keys
    return sorted(keys, key=params.index) if set(keys) <= set(params) else keys


def _describe(tree) -> str:
    if isinstance(tree, Leaf):
        return tree.describe()
    if isinstance(tree, dict):
        return "{" + ", ".join(f"{k}: {_describe(v)}" for k, v in tree.items()) + "}"
    if isinstance(tree, (list, tuple)):
        return "(" + ", ".join(_describe(v) for v in tree) + ("," if len(tree) == 1 else "") + ")"
    return repr(tree)


# -- building --------------------------------------------------------------------------
def as_inputs(value, forward_fn: Optional[Callable] = None, key: str = "example_inputs") -> ExampleInputs:
    """:class:`ExampleInputs` from anything the module docstring lists (an
    ``ExampleInputs`` is returned as it is, with ``forward_fn`` if given).

    Raises:
        ConfigError: naming ``key``, before anything runs.
    """
    if isinstance(value, ExampleInputs):
        return value.with_forward(forward_fn)
    if _looks_like_shape(value):  # a shape, or a failed attempt at one
        if key == "example_inputs":
            key = "input_shape"
        if not _is_shape(value):
            raise ConfigError(key, value, SHAPE_ALLOWED)
    tree = _parse(value, key)
    if not _leaves(tree):
        raise ConfigError(key, value, ALLOWED)
    return ExampleInputs(tree).with_forward(forward_fn)


def given_inputs(example_inputs, input_shape, forward_fn: Optional[Callable] = None) -> ExampleInputs:
    """:func:`as_inputs` of ``example_inputs``, or of the ``input_shape`` shorthand (a
    keyword that every entry point still takes); not both."""
    if example_inputs is not None and input_shape is not None:
        raise ConfigError("input_shape", input_shape, "None when example_inputs is given "
                          "(input_shape is the shorthand for one float32 input)")
    if example_inputs is None:
        return as_inputs(input_shape, forward_fn, key="input_shape")
    return as_inputs(example_inputs, forward_fn)


def model_inputs(model, forward_fn: Optional[Callable] = None) -> ExampleInputs:
    """The example inputs of a ``paddle.Model`` from its InputSpecs (every input, with
    its dtype; see :func:`~slim_callbacks.core.paddle_utils.model_example_inputs`).

    Raises:
        ConfigError: the model has no InputSpecs with shapes.
    """
    specs = model_example_inputs(model)
    if specs is None:
        raise ConfigError("example_inputs", None, "the network's example inputs, e.g. "
                          "input_shape=[1, 3, 224, 224] or example_inputs=[[1, 3, 32, 32], "
                          "{'shape': [1, 8], 'dtype': 'int64'}] (the paddle.Model has no "
                          "InputSpecs with shapes to take them from)")
    return as_inputs(specs, forward_fn)


def _is_int(d) -> bool:
    return isinstance(d, (int, np.integer)) and not isinstance(d, bool)


def _is_shape(value) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(_is_int(d) for d in value)


def _looks_like_shape(value) -> bool:
    return value is None or isinstance(value, (str, bytes)) or (
        isinstance(value, (list, tuple)) and all(
            isinstance(d, (int, float, np.number)) and not isinstance(d, bool) for d in value))


def _is_leaf_dict(value) -> bool:
    return isinstance(value, dict) and "shape" in value and set(value) <= {"shape", "dtype", "name"}


def _shape_leaf(shape, key, dtype="float32", name=None, unknown_ok=False) -> Leaf:
    if unknown_ok:
        shape = [1 if d is None or (_is_int(d) and d == -1) else d for d in list(shape)]
    if not _is_shape(shape) or any(d < 1 for d in shape):
        raise ConfigError(key, shape, SHAPE_ALLOWED)
    return Leaf(tuple(int(d) for d in shape), dtype, name)


def _parse(value, key):
    if _is_shape(value):
        return _shape_leaf(value, key)
    if isinstance(value, paddle.Tensor):
        return _value_leaf(value.numpy(), key)
    if isinstance(value, np.ndarray):
        return _value_leaf(value, key)
    if isinstance(value, paddle.static.InputSpec):
        return _shape_leaf(value.shape, key, _dtype(value.dtype, key), value.name, unknown_ok=True)
    if _is_leaf_dict(value):
        shape = value["shape"]
        return _shape_leaf(shape if isinstance(shape, (list, tuple)) else [shape], f"{key}.shape",
                           _dtype(value.get("dtype", "float32"), f"{key}.dtype"), value.get("name"),
                           unknown_ok=True)
    if isinstance(value, (list, tuple)):
        return type(value)(_parse(v, f"{key}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(key, value, "a dict with string keys (keyword arguments)")
        return {k: _parse(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, CONSTANTS):
        return value
    raise ConfigError(key, value, ALLOWED)


def _value_leaf(array: np.ndarray, key, name=None) -> Leaf:
    return Leaf(tuple(int(d) for d in array.shape), _dtype(array.dtype, key), name, np.array(array))


def _dtype(dtype, key) -> str:
    try:
        return dtype_name(dtype)
    except ConfigError:
        raise ConfigError(key, dtype, f"a dtype: one of {', '.join(DTYPES)}") from None
