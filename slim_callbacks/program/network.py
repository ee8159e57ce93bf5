"""The network rebuilt from a program: real sublayers (convs, BatchNorm, Linear, ...)
and a list of steps that its ``forward`` runs in program order.

A :class:`Step` calls either one of the network's sublayers (by name) or a Paddle
function (``paddle._C_ops`` functions by name, looked up on every call, so that the
tracer that patches them sees the call); its arguments are :class:`Ref` (a value
computed before), :class:`Param` (a parameter of the network itself) or literals.

Examples:
    >>> import paddle
    >>> net = ProgramNetwork(["x"], ["v1"])
    >>> net.add_step(Step("relu", [Ref("x")], ["v1"]))
    >>> net(paddle.to_tensor([-1.0, 2.0])).numpy().tolist()
    [0.0, 2.0]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Sequence, Union

import paddle
from paddle import _C_ops


@dataclass(frozen=True)
class Ref:
    """A value of the program, computed by an earlier step (or a network input)."""

    name: str


@dataclass(frozen=True)
class Param:
    """A parameter the network owns itself (one no sublayer took), by attribute name."""

    name: str


@dataclass
class Step:
    """``outputs = call(*args, **kwargs)``: ``call`` is a ``paddle._C_ops`` function
    name, a callable, or ``"layer:NAME"`` for the sublayer ``NAME``; more than one
    output name unpacks the result."""

    call: Union[str, Callable]
    args: List[object]
    outputs: List[str]
    kwargs: Dict[str, object] = field(default_factory=dict)
    where: str = ""

    @property
    def layer(self):
        """The sublayer name this step calls, or None."""
        if isinstance(self.call, str) and self.call.startswith("layer:"):
            return self.call[len("layer:"):]
        return None


class ProgramNetwork(paddle.nn.Layer):
    """A dygraph network rebuilt from an inference program (see
    :func:`slim_callbacks.program.load_inference_model`): ``forward(*inputs)`` runs
    the steps in order and returns the fetched value (a list if the program fetches
    several)."""

    def __init__(self, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self._inputs = list(inputs)
        self._outputs = list(outputs)
        self._steps: List[Step] = []
        self.input_shape = None  # the shape load_inference_model checked it at
        self.weight_names: Dict[str, str] = {}  # sublayer -> the exported weight it holds

    @property
    def steps(self) -> List[Step]:
        """The steps ``forward`` runs, in order."""
        return list(self._steps)

    def add_step(self, step: Step) -> None:
        self._steps.append(step)

    def forward(self, x, *more):
        return _run(self, (x, *more))

    def extra_repr(self) -> str:
        return f"inputs={self._inputs}, outputs={self._outputs}, steps={len(self._steps)}"


@paddle.jit.not_to_static  # plain Python under paddle.jit.save: it records the ops it runs
def _run(network: ProgramNetwork, inputs):
    if len(inputs) != len(network._inputs):
        raise TypeError(f"this network takes {len(network._inputs)} inputs "
                        f"({', '.join(network._inputs)}), got {len(inputs)}")
    values = dict(zip(network._inputs, inputs))
    for step in network._steps:
        args = [_resolve(network, values, a) for a in step.args]
        kwargs = {k: _resolve(network, values, a) for k, a in step.kwargs.items()}
        out = _callable(network, step.call)(*args, **kwargs)
        if len(step.outputs) == 1:
            values[step.outputs[0]] = out
        else:
            values.update(zip(step.outputs, out))
    outs = [values[name] for name in network._outputs]
    return outs[0] if len(outs) == 1 else outs


def _resolve(network, values, arg):
    if isinstance(arg, Ref):
        return values[arg.name]
    if isinstance(arg, Param):
        return getattr(network, arg.name)
    if isinstance(arg, list):
        return [_resolve(network, values, a) for a in arg]
    return arg


def _callable(network, call):
    if not isinstance(call, str):
        return call
    if call.startswith("layer:"):
        return getattr(network, call[len("layer:"):])
    return getattr(_C_ops, call)
