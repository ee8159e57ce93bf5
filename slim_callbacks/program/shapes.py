"""Reshape and split sizes that follow the tensor they apply to.

An export writes every size as a number: a channel shuffle's
``x.reshape([b, g, c // g, h, w])`` is ``reshape(x, [1, 2, 24, 8, 8])`` in the program.
Rebuilt literally, the tracer must block those channels (a literal cannot follow
pruning). So the rebuilt network computes such sizes from ``x.shape`` again, as the
Python code did: the leading and trailing sizes that the reshape keeps are read from
``x.shape``, merged sizes are their product, and one size split into several keeps
all but the largest as written and divides ``x.shape`` by them for the largest (a
shuffle's ``c // g``, attention's ``c // heads``). The sizes are the program's at the
exported shape, so the rebuilt network's outputs are unchanged.

Examples:
    >>> reshape_plan((1, 48, 8, 8), [1, 2, 24, 8, 8])
    [('dim', 0), 2, ('div', 1, 2), ('dim', 2), ('dim', 3)]
    >>> reshape_plan((1, 24, 2, 8, 8), [1, 48, 8, 8])
    [('dim', 0), ('prod', 1, 3), ('dim', 3), ('dim', 4)]
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from paddle import _C_ops

from slim_callbacks.program.converters import CONVERTERS, c_ops


def reshape_plan(source: Optional[Sequence[int]], target) -> Optional[List[object]]:
    """How each target size is computed from the input's sizes (see the module
    docstring), or None to keep the target as written."""
    if source is None or not isinstance(target, list) or any(t <= 0 for t in target) \
            or any(s <= 0 for s in source) or int(np.prod(source)) != int(np.prod(target)):
        return None
    head = 0
    while head < min(len(source), len(target)) and source[head] == target[head]:
        head += 1
    tail = 0
    while tail < min(len(source), len(target)) - head and source[-1 - tail] == target[-1 - tail]:
        tail += 1
    middle_in, middle_out = source[head:len(source) - tail], target[head:len(target) - tail]
    plan: List[object] = [("dim", i) for i in range(head)]
    if len(middle_out) == 1 and middle_in:
        plan.append(("prod", head, len(source) - tail))
    elif len(middle_in) == 1 and middle_out:
        largest = len(middle_out) - 1 - int(np.argmax(middle_out[::-1]))
        rest = int(np.prod([s for i, s in enumerate(middle_out) if i != largest]))
        plan += [("div", head, rest) if i == largest else int(s) for i, s in enumerate(middle_out)]
    else:
        plan += [int(s) for s in middle_out]
    return plan + [("dim", i) for i in range(len(source) - tail, len(source))]


def sizes(shape, plan) -> List[int]:
    """The target sizes of ``plan`` for an input of ``shape`` (``x.shape``)."""
    out = []
    for item in plan:
        if isinstance(item, int):
            out.append(item)
        elif item[0] == "dim":
            out.append(shape[item[1]])
        elif item[0] == "div":
            out.append(shape[item[1]] // item[2])
        else:
            size = shape[item[1]]
            for i in range(item[1] + 1, item[2]):
                size = size * shape[i]
            out.append(size)
    return out


def reshape_following(x, plan):
    return _C_ops.reshape(x, sizes(x.shape, plan))


def split_following(x, parts: int, axis: int):
    return _C_ops.split(x, [x.shape[axis] // parts] * parts, axis)


DYNAMIC = 7919  # stands for a dynamic size (-1) while planning: a prime no literal is


def computed_target(builder, node) -> Optional[List[int]]:
    """The target of a reshape whose shape the program computes (a dynamic batch:
    ``stack([slice(shape64(x))[0], 2, 4, 16, 16])``) as numbers, a size read from a
    shape as :data:`DYNAMIC` where that is dynamic (the batch, in every tensor alike);
    None if it is computed otherwise."""
    stack = builder.producer(node.inputs[1])
    combine = builder.producer(stack.inputs[0]) if stack is not None and stack.op == "pd_op.stack" else None
    if combine is None or combine.op != "builtin.combine":
        return None
    target = []
    for value in combine.inputs:
        item = builder.producer(value)
        if item is not None and item.op == "pd_op.full" and not item.attrs["shape"]:
            target.append(int(item.attrs["value"]))
            continue
        shape = builder.producer(item.inputs[0]) if item is not None and item.op == "pd_op.slice" else None
        if shape is None or shape.op not in ("pd_op.shape", "pd_op.shape64") \
                or not item.attrs.get("decrease_axis"):
            return None
        start = builder.arg(item, 1)
        size = shape.in_shapes[0][start[0]] if isinstance(start, list) and len(start) == 1 else None
        if size is None:
            return None
        target.append(DYNAMIC if size < 0 else size)
    return target


def inferred_size(source, target) -> Optional[List[int]]:
    """``target`` with its ``-1`` worked out from ``source`` (None if it does not divide).

    >>> inferred_size([DYNAMIC, 1280, 1, 1], [-1, 1280]) == [DYNAMIC, 1280]
    True
    """
    rest = int(np.prod([t for t in target if t != -1]))
    total = int(np.prod(source))
    if rest <= 0 or total % rest:
        return None
    return [total // rest if t == -1 else t for t in target]


def reshape(node, builder) -> None:
    target = builder.arg(node, 1)
    source = node.in_shapes[0]
    if not isinstance(target, list) and source is not None:
        target = computed_target(builder, node)
        source = [DYNAMIC if d < 0 else d for d in source]
    elif isinstance(target, list) and source is not None and target.count(-1) == 1:
        source = [DYNAMIC if d < 0 else d for d in source]  # GhostNet's [-1, self.channels]
        target = inferred_size(source, target)
    plan = reshape_plan(source, target)
    if plan is None or any(isinstance(p, int) and p % DYNAMIC == 0 for p in plan):
        return c_ops(node, builder)
    builder.emit(reshape_following, [builder.arg(node, 0), plan], node.outputs, node)


def split(node, builder) -> None:
    """Equal sections that cover the axis: each is ``x.shape[axis] // parts``; unequal
    ones: ``int`` attributes of the network (``split_12_0``), which pruning sets like a
    hand-written layer's (DPN's ``split(x, [self.num_1x1_c, self.inc])``)."""
    sections, axis, shape = builder.arg(node, 1), builder.arg(node, 2), node.in_shapes[0]
    if not isinstance(sections, list) or not isinstance(axis, int) or shape is None \
            or sum(sections) != shape[axis] or shape[axis] <= 0 or min(sections) <= 0:
        return c_ops(node, builder)
    if len(set(sections)) == 1:
        return builder.emit(split_following, [builder.arg(node, 0), len(sections), axis],
                            node.outputs, node)
    sizes = [builder.size_attribute(f"split_{node.index}_{i}", s) for i, s in enumerate(sections)]
    builder.emit("split", [builder.arg(node, 0), sizes, axis], node.outputs, node)


CONVERTERS.update({"pd_op.reshape": reshape, "pd_op.reshape_": reshape, "pd_op.split": split})
