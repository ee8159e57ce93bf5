"""Read an exported Paddle 3 inference program (``PREFIX.json`` + ``PREFIX.pdiparams``)
into plain Python data: its ops in order, their attributes and operands, and the
parameter values as numpy arrays.

Paddle reads the program (``paddle.static.load_inference_model`` in static mode, in a
scope of its own); nothing of Paddle's static state stays behind and dygraph mode is
restored. Each op becomes a :class:`Node`; a value (an op result) is named ``"v<N>"``
in program order, and a node's ``inputs`` name the values it reads (``None`` for an
operand the op leaves out).

Examples:
    >>> import paddle, tempfile, os
    >>> from slim_callbacks.deploy.runtime import save_inference_model
    >>> prefix = os.path.join(tempfile.mkdtemp(), "model")
    >>> save_inference_model(paddle.nn.Sequential(paddle.nn.Linear(4, 2), paddle.nn.ReLU()),
    ...                      prefix, [1, 4])
    >>> program = read_program(prefix)
    >>> [node.op for node in program.nodes if not node.op.startswith("builtin.")]
    ['pd_op.data', 'pd_op.matmul', 'pd_op.add', 'pd_op.relu', 'pd_op.fetch']
    >>> program.inputs, [list(s) for s in program.input_shapes]
    (['x'], [[1, 4]])
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.deploy.model_files import check_model_files

PARAMETER, DATA, FETCH = "builtin.parameter", "pd_op.data", "pd_op.fetch"


@dataclass
class Node:
    """One op of the program: ``op`` (e.g. ``pd_op.conv2d``), ``attrs`` (name ->
    value), ``inputs``/``outputs`` (value names), the operand and attribute names in the
    op's signature order, and the shapes of what it reads and makes (``-1``: dynamic)."""

    index: int
    op: str
    attrs: Dict[str, object]
    inputs: List[Optional[str]]
    outputs: List[str]
    input_names: List[str] = field(default_factory=list)
    attr_names: List[str] = field(default_factory=list)
    in_shapes: List[Optional[Tuple[int, ...]]] = field(default_factory=list)
    out_shapes: List[Tuple[int, ...]] = field(default_factory=list)

    @property
    def where(self) -> str:
        """``op #index (layer path)`` for messages."""
        name = self.attrs.get("struct_name")
        return f"{self.op} (op #{self.index}{', layer ' + name.strip('/') if name else ''})"


@dataclass
class Program:
    """The program as plain data: ``nodes`` in order, ``params`` (parameter name ->
    array), the feed names and shapes, and the values fetched (in fetch order)."""

    prefix: str
    nodes: List[Node]
    params: Dict[str, np.ndarray]
    inputs: List[str]
    input_shapes: List[Tuple[int, ...]]
    input_dtypes: List[str]
    outputs: List[str]

    def producers(self) -> Dict[str, Node]:
        """Value name -> the node that makes it."""
        return {v: node for node in self.nodes for v in node.outputs}

    def consumers(self) -> Dict[str, List[Node]]:
        """Value name -> the nodes that read it (in program order)."""
        users: Dict[str, List[Node]] = {}
        for node in self.nodes:
            for v in node.inputs:
                if v is not None:
                    users.setdefault(v, []).append(node)
        return users


def read_program(prefix: str) -> Program:
    """The program saved at ``prefix``; SlimError if the files are missing, do not match
    or Paddle cannot read them."""
    check_model_files(prefix)
    was_dynamic = paddle.in_dynamic_mode()
    paddle.enable_static()
    try:
        scope = paddle.static.Scope()
        with paddle.static.scope_guard(scope):
            exe = paddle.static.Executor(paddle.CPUPlace())
            try:
                program, feeds, _ = paddle.static.load_inference_model(prefix, exe)
            except Exception as err:
                raise SlimError(f"cannot read the inference program at {prefix!r} "
                                f"({' '.join(str(err).split())[:200]})") from None
            return _as_data(prefix, program, list(feeds), scope)
    finally:
        if was_dynamic:
            paddle.disable_static()


def _as_data(prefix, program, feeds, scope) -> Program:
    ops = program.global_block().ops
    names: Dict[str, str] = {}
    nodes, params, fetched = [], {}, {}
    for index, op in enumerate(ops):
        for value in op.results():
            names[value.id] = f"v{len(names)}"
        node = Node(index, op.name(), dict(op.attrs()),
                    [names.get(v.id) if v is not None and v.initialized() else None
                     for v in op.operands_source()],
                    [names[v.id] for v in op.results()],
                    *_signature(op),
                    [_shape(v) for v in op.operands_source()],
                    [_shape(v) for v in op.results()])
        node.attrs.pop("stop_gradient", None)
        if node.op == PARAMETER:
            name = node.attrs["parameter_name"]
            params[name] = np.array(scope.find_var(name).get_tensor())
        elif node.op == FETCH:
            fetched[node.attrs["col"]] = node.inputs[0]
        nodes.append(node)
    data = {n.attrs["name"]: n for n in nodes if n.op == DATA}
    missing = [f for f in feeds if f not in data]
    if missing:
        raise SlimError(f"{prefix}: the program feeds {missing} but has no data op for them")
    return Program(prefix, nodes, params, feeds,
                   [tuple(data[f].attrs["shape"]) for f in feeds],
                   [_dtype_name(data[f].attrs["dtype"]) for f in feeds],
                   [fetched[col] for col in sorted(fetched)])


def _signature(op) -> Tuple[List[str], List[str]]:
    """The operand and attribute names in the op's signature order (none for the
    ``builtin.*`` ops, which have no signature)."""
    if op.name().startswith("builtin."):
        return [], []
    return list(op.get_input_names()), list(op.get_attr_names())


def _shape(value) -> Optional[Tuple[int, ...]]:
    if value is None or not value.initialized():
        return None
    try:
        return tuple(int(d) for d in value.shape)
    except Exception:  # a list of tensors (builtin.combine) has no shape
        return None


def _dtype_name(dtype) -> str:
    """``"float32"`` for ``DataType.FLOAT32`` (and for ``paddle.float32``)."""
    return str(dtype).split(".")[-1].split(":")[0].lower().replace(">", "")
