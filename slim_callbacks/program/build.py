"""Build a :class:`~.network.ProgramNetwork` from a read program: each op goes to its
converter (:mod:`~.converters`, :mod:`~.layer_converters`) in program order.

The :class:`Builder` is what converters talk to: the values an op reads (a computed
value, a constant, a parameter), the ops around it (to fuse a bias ``add``), and
``emit``/``add_layer`` for what the rebuilt network runs.
"""
from __future__ import annotations

import keyword
import re
from typing import Dict, List, Optional, Set

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.program import layer_converters, shapes  # noqa: F401 (register their converters)
from slim_callbacks.program.converters import CONVERTERS, SCALAR_OPERANDS
from slim_callbacks.program.network import Param, ProgramNetwork, Ref, Step
from slim_callbacks.program.reader import PARAMETER, Node, Program

HOW_TO_REGISTER = ("register a converter: slim_callbacks.program.register_converter({op!r}, "
                   "'c_ops') if it is one paddle._C_ops call with its operands then attributes, "
                   "else register_converter({op!r}, fn) with fn(node, builder)")


def build_network(program: Program) -> ProgramNetwork:
    """The rebuilt network; SlimError naming every op without a converter."""
    unknown = sorted({n.op for n in program.nodes if n.op not in CONVERTERS})
    if unknown:
        raise SlimError(f"{program.prefix}: no converter for {', '.join(unknown)} "
                        f"(first at op #{next(n.index for n in program.nodes if n.op == unknown[0])}); "
                        + HOW_TO_REGISTER.format(op=unknown[0]))
    builder = Builder(program)
    for node in program.nodes:
        if node.index not in builder.absorbed:
            builder.node = node
            CONVERTERS[node.op](node, builder)
    return builder.network


class Builder:
    """What a converter sees of the program and the network being built."""

    def __init__(self, program: Program):
        self.program = program
        self.network = ProgramNetwork(program.inputs, program.outputs)
        self.absorbed: Set[int] = set()
        self.constants: Dict[str, object] = {}
        self.node: Optional[Node] = None
        self._producers = program.producers()
        self._consumers = program.consumers()
        self._free: Dict[str, str] = {}      # parameter name -> attribute on the network
        self._names: Set[str] = set()
        for name in program.inputs:          # a feed's value is its data op's result
            data = next(n for n in program.nodes if n.op == "pd_op.data" and n.attrs["name"] == name)
            self.network._inputs[self.network._inputs.index(name)] = data.outputs[0]

    # ------------------------------------------------------------ reading the program
    def producer(self, value: Optional[str]) -> Optional[Node]:
        return self._producers.get(value)

    def sole_user(self, value: str) -> Optional[Node]:
        """The one op that reads ``value`` (None if there are several or it is fetched)."""
        users = self._consumers.get(value, [])
        if len(users) != 1 or value in self.program.outputs:
            return None
        return users[0]

    def param_value(self, value: Optional[str]) -> Optional[np.ndarray]:
        """The array of a parameter value, or None if ``value`` is computed."""
        node = self.producer(value)
        if node is None or node.op != PARAMETER:
            return None
        return self.program.params[node.attrs["parameter_name"]]

    def arg(self, node: Node, i: int):
        """What the rebuilt call passes for operand ``i`` of ``node``: a constant, a
        :class:`Param` (a parameter no sublayer took) or a :class:`Ref`."""
        value = node.inputs[i]
        if value is None:
            return None
        if value in self.constants:
            return self.constants[value]
        source = self.producer(value)
        if source is not None and source.op == PARAMETER:
            return Param(self._free_parameter(source.attrs["parameter_name"]))
        name = node.input_names[i] if i < len(node.input_names) else ""
        if source is not None and source.op == "pd_op.full" and name in SCALAR_OPERANDS \
                and int(np.prod(source.attrs["shape"] or [1])) == 1:
            return _number(source.attrs["value"], source.attrs["dtype"])
        return Ref(value)

    @staticmethod
    def attr(value):
        """An attribute as the Python call takes it (a Place: the CPU)."""
        if type(value).__name__ == "Place":
            return paddle.CPUPlace()
        return value

    # ---------------------------------------------------------------- building the net
    def set_constant(self, value: str, literal) -> None:
        self.constants[value] = literal

    def absorb(self, *nodes: Optional[Node]) -> None:
        """Ops a converter took into its own step (a fused bias ``add``)."""
        self.absorbed.update(n.index for n in nodes if n is not None)

    def only_first_output(self, node: Node) -> None:
        """SlimError if the program reads another output of ``node`` than the first
        (the running statistics of a BatchNorm, say): the sublayer returns one."""
        used = [v for v in node.outputs[1:] if v in self._consumers or v in self.program.outputs]
        if used:
            raise SlimError(f"{self.program.prefix}: {node.where} has more outputs in use "
                            f"than its layer returns; register a converter for {node.op!r} "
                            f"(slim_callbacks.program.register_converter) that handles them")

    def emit(self, call, args: List[object], outputs: List[str], node: Node,
             kwargs: Optional[dict] = None) -> None:
        """The network runs ``outputs = call(*args, **kwargs)`` (``call``: a
        ``paddle._C_ops`` name or a callable)."""
        self.network.add_step(Step(call, list(args), list(outputs), dict(kwargs or {}), node.where))

    def add_layer(self, weight_value: str, layer: paddle.nn.Layer, args, outputs, node: Node,
                  kwargs: Optional[dict] = None) -> str:
        """Adds ``layer`` named after its weight parameter (``conv2d_3.w_0`` ->
        ``conv2d_3``) and a step that calls it."""
        param = self.producer(weight_value).attrs["parameter_name"]
        name = self._unique(param.rsplit(".", 1)[0])
        self.network.add_sublayer(name, layer)
        self.network.weight_names[name] = param
        self.emit(f"layer:{name}", args, outputs, node, kwargs)
        return name

    def size_attribute(self, base: str, value: int) -> Param:
        """A size the network keeps as an ``int`` attribute (read on each call), so
        pruning can set it as it sets a hand-written layer's ``self.num_1x1_c``."""
        name = self._unique(base)
        setattr(self.network, name, int(value))
        return Param(name)

    def _free_parameter(self, param: str) -> str:
        if param not in self._free:
            value = self.program.params[param]
            name = self._unique(param)
            if not np.issubdtype(value.dtype, np.floating):  # an index table: a buffer
                self.network.register_buffer(name, paddle.to_tensor(value))
            else:
                tensor = self.network.create_parameter(list(value.shape), dtype=str(value.dtype))
                tensor.set_value(value)
                self.network.add_parameter(name, tensor)
            self._free[param] = name
        return self._free[param]

    def _unique(self, name: str) -> str:
        base = re.sub(r"\W", "_", name)
        if not base or base[0].isdigit() or keyword.iskeyword(base):
            base = "p_" + base
        name, k = base, 1
        while name in self._names or hasattr(self.network, name):
            k += 1
            name = f"{base}_{k}"
        self._names.add(name)
        return name


def _number(value, dtype):
    kind = str(dtype).lower()
    return int(value) if "int" in kind else bool(value) if "bool" in kind else float(value)
