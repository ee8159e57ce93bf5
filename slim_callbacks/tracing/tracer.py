"""Trace a dygraph network once and find its groups of coupled channels.

One forward pass in eval mode and one in train mode record every Paddle op
(``paddle._C_ops`` and the Tensor operators) and every call of a known layer kind
(:mod:`~slim_callbacks.tracing.kinds`: conv, Linear, Embedding, BatchNorm, PReLU,
LayerNorm, GroupNorm, registered), and move channel labels (see
:mod:`slim_callbacks.tracing.labels`) along with the real tensors.
Both passes share one set of labels, so a channel is prunable only if both modes allow
it, and branches that run only in training (auxiliary heads) are sliced too. Nothing
stays changed: the interception is undone, hooks are removed, and each sublayer's
train/eval mode, the BatchNorm statistics and the global RNG state are restored in
``finally`` blocks.

This module owns :func:`trace`, its result :class:`DependencyGraph` and the
:class:`Tracer` bookkeeping (atoms, unions, records, blocks); what layers and ops do to
labels is in :mod:`~slim_callbacks.tracing.layer_rules` (chosen per layer by
:mod:`~slim_callbacks.tracing.kinds`) and :mod:`~slim_callbacks.tracing.op_rules`.

Safety rules, so that pruning is never wrong:
- an op the tracer does not know blocks every channel that flows into it, with one
  warning naming the op and the layer it ran in;
- a tensor made by an op that escaped interception is found through its autograd
  graph (``grad_fn.next_functions``) and its source channels are blocked;
- channels combined elementwise with a tensor whose size cannot follow them (the
  input, a constant, an untraced op's output) are blocked; so are channels reshaped or
  split to literal sizes (sizes read from ``Tensor.shape`` are told apart from
  literals by :class:`RuntimeSize`);
- channels that reach a network output are never pruned.

Examples:
    >>> import paddle
    >>> net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    >>> graph = trace(net, [1, 3, 32, 32])
    >>> len(graph.prunable_groups())
    14
"""
from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.example_inputs import ExampleInputs, given_inputs
from slim_callbacks.core.paddle_utils import layer_table, preserved_state, unwrap
from slim_callbacks.tracing import labels as L
from slim_callbacks.tracing.grad_nodes import grad_node, leaked_per_read
from slim_callbacks.tracing.graph import DependencyGraph  # noqa: F401 (imported from here too)
from slim_callbacks.tracing.grouped import GroupedConv, settle, unique_convs
from slim_callbacks.tracing.groups import MemberRecord, UnionFind, build_groups
from slim_callbacks.tracing.kinds import is_known_layer, kind_of
from slim_callbacks.tracing.op_args import tensors_in
from slim_callbacks.tracing.op_rules import intercept
from slim_callbacks.tracing.products import table_of
from slim_callbacks.tracing.rule_errors import registered_rule
from slim_callbacks.tracing.sizes import (
    block_ratios_that_cannot_hold,
    block_sizes_that_cannot_follow,
    tagged_attributes,
)
from slim_callbacks.tracing.structure import Structure, check_structure

logger = logging.getLogger(__name__)

TOP_LEVEL = "the top-level network"  # where() outside every sublayer


def trace(network: paddle.nn.Layer, example_inputs=None, structure=None, *,
          input_shape: Optional[Sequence[int]] = None, forward_fn=None) -> DependencyGraph:
    """Finds the coupled channel groups of ``network`` for ``example_inputs``.

    The network runs once in eval mode and once in train mode (see the module
    docstring); neither pass changes its weights, BatchNorm statistics, attributes or
    the RNG. Channels that reach any output (a tensor in tuples, lists, dicts of any
    depth: a loss dict too) are kept.

    Args:
        network: a dygraph ``paddle.nn.Layer`` (a ``paddle.DataParallel`` is unwrapped).
        example_inputs: inputs of any structure (see
            :mod:`slim_callbacks.core.example_inputs`), e.g. ``[1, 3, 224, 224]`` (one
            float32 tensor), ``(image, ids)`` or ``{"image": ..., "ids": ...}``.
        structure: what a unit spans where layers allow several shapes (whole heads or
            head dims, ...): a :class:`~slim_callbacks.tracing.structure.Structure` or
            a dict of its fields; None: the defaults.
        input_shape: the shorthand for one float32 input of this shape.
        forward_fn: ``callable(network, inputs) -> outputs``, how to call the network
            (in train mode with targets, say); default: positional for a tuple or list,
            keywords for a dict.

    Raises:
        ConfigError: a bad ``structure`` or inputs.
        SlimError: if the network rejects the inputs (naming the mode).
    """
    structure = check_structure(structure)
    inputs = given_inputs(example_inputs, input_shape, forward_fn)
    network = unwrap(network)
    tracer = Tracer(network, structure)
    tracer.inputs = inputs
    leaked_per_read()  # measured once, before ops are intercepted
    with preserved_state(network):
        args = inputs.tensors("randn")
        for x in tensors_in(args):
            x.stop_gradient = not x.is_floating_point()
        with hooks(network, tracer), intercept(tracer), tagged_attributes(tracer.layers):
            for training in (False, True):
                tracer.start_pass()
                for x in tensors_in(args):
                    tracer.set_labels(x, L.zeros(x.ndim))
                out = _forward_in_mode(network, inputs, args, training)
                for t in tensors_in(out):
                    tracer.block(tracer.labels_of(t), "reaches a network output",
                                 site=("network output", ""))
                out = t = None  # the next pass must not hold this one's graph
    return tracer.graph()


@contextlib.contextmanager
def hooks(network, tracer):
    """Hooks on every sublayer of ``network`` that report known layers (those with a
    :func:`~slim_callbacks.tracing.kinds.kind_of`) to ``tracer``; removed when the
    block ends. Ops inside a known layer are not traced one by one."""
    handles = []

    def pre(layer, inputs):
        tracer.stack.append(tracer.names.get(id(layer), "?"))
        if kind_of(layer) is not None:
            tracer.quiet += 1

    def post(layer, inputs, output):
        name = tracer.stack.pop()
        kind = kind_of(layer)
        if kind is None:
            return
        tracer.quiet -= 1
        tracer.layer_types[name] = type(layer).__name__
        tracer.calls[name] = tracer.calls.get(name, 0) + 1
        if tracer.quiet == 0:
            tracer.site = (type(layer).__name__, name)
            tracer.quiet += 1  # the handler's own int() of sizes is not the network's
            try:
                with registered_rule(kind.layer_type is not None, f"the rule register_layer("
                                     f"{kind.name})", name):
                    kind.trace(tracer, name, layer, inputs[0], output)
            finally:
                tracer.quiet -= 1
                tracer.site = None

    try:
        for layer in tracer.layers.values():
            handles.append(layer.register_forward_pre_hook(pre))
            handles.append(layer.register_forward_post_hook(post))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _forward_in_mode(network, inputs: ExampleInputs, args, training: bool):
    network.train() if training else network.eval()
    try:
        return inputs.run(network, args)
    except SlimError:  # a registered rule failed, or a ConfigError of its arguments
        raise
    except Exception as err:  # the user's forward failed: say with what input
        raise inputs.rejected(err, "train" if training else "eval") from err


class Tracer:
    """Label bookkeeping during one traced forward pass."""

    def __init__(self, network, structure: Optional[Structure] = None):
        self.structure = structure or Structure()
        self.uf = UnionFind()
        self.atom_layer: List[int] = [0]
        self.producer_names: List[str] = []
        self.layer_first_atom: Dict[str, int] = {}
        self.tensor_labels: Dict[int, tuple] = {}
        self.origins: Dict[int, tuple] = {}  # id -> (tensor, layer, attr, axis of each param axis)
        self.node_labels: Dict[int, tuple] = {}  # node pointer -> (node, labels)
        self.records: List[MemberRecord] = []
        self.blocked: Dict[int, str] = {}
        self.block_sites: Dict[int, Tuple[str, str]] = {}  # atom -> (op or layer type, where)
        self.approximations: Dict[int, str] = {}  # atom -> why removing it is not exact
        self.sizes: Dict[Tuple[str, str], np.ndarray] = {}  # attribute -> atoms it counts
        self.size_uses: Dict[Tuple[str, str], List[np.ndarray]] = {}  # every axis it sizes
        self.size_values: Dict[Tuple[str, str], int] = {}
        self.grouped: List[GroupedConv] = []  # grouped convs settled in graph()
        self.ratios: List[Tuple[tuple, str]] = []  # sizes whose width factors must shrink in step
        self.site: Optional[Tuple[str, str]] = None  # the op or layer being mapped now
        self.warned, self.seen_records, self.unknown_ops = set(), set(), {}  # ops: dict as a set
        self.passes, self.products_complete, self.inputs = 0, True, None  # inputs: as traced
        self.products: List[tuple] = []  # eval-pass products, see tracing.products
        self.stack: List[str] = []
        self.quiet = 0  # > 0 inside a known layer or while computing labels
        self.layers = layer_table(network)  # "" is the network itself
        self.names = {id(layer): name for name, layer in self.layers.items()}
        self.layer_order = {name: i for i, name in enumerate(self.names.values())}
        self.layer_types: Dict[str, str] = {}
        self.calls: Dict[str, int] = {}  # known layer -> calls in the two passes
        self.param_names = {p.name: (name, attr) for name, layer in self.layers.items()
                            for attr, p in layer._parameters.items() if p is not None}
        self.direct_uses: Dict[Tuple[str, str], str] = {}  # known layer's param -> op using it

    def start_pass(self) -> None:
        """Forgets the tensors of the previous forward pass (their ids and graph nodes
        may be reused); atoms, unions, records and blocks carry over."""
        self.passes += 1
        self.tensor_labels.clear()
        self.node_labels.clear()
        self.origins.clear()

    # -- labels of tensors ---------------------------------------------------
    def set_labels(self, tensor, labels: np.ndarray) -> None:
        labels = L.compress(labels.reshape((1,) * (tensor.ndim - labels.ndim) + labels.shape)
                            if labels.ndim < tensor.ndim else labels)
        self.tensor_labels[id(tensor)] = (weakref.ref(tensor), labels)  # a dead tensor is freed
        node = grad_node(tensor)
        if node is not None:  # the node is kept: its pointer is not reused while tracing
            self.node_labels[node.node_ptr()] = (node, labels)

    # -- free parameters and their views ---------------------------------------
    def origin_of(self, tensor) -> Optional[Tuple[str, str, List[Optional[int]]]]:
        """``(layer, attr, axes)`` if ``tensor`` is a free parameter (one owned by a
        layer the engine does not handle itself, such as a class token or LayerScale's
        ``gamma``) or a view of one (``expand``, ``cast``, ``w[:, None, None]``);
        ``axes[i]`` is the tensor axis that holds the parameter's axis ``i``."""
        entry = self.origins.get(id(tensor))
        if entry is not None and entry[0] is tensor:
            return entry[1:]
        owner = self.param_names.get(getattr(tensor, "name", None))
        if owner is None:
            return None
        layer, attr = owner
        module = self.layers[layer]
        if module._parameters.get(attr) is not tensor or is_known_layer(module):
            return None
        return layer, attr, list(range(tensor.ndim))

    def note_direct_use(self, tensor, op: str) -> None:
        """A parameter of a known layer used by an op outside that layer (a tied output
        projection ``matmul(h, embedding.weight, transpose_y=True)``): that use would not
        follow the layer's slices, so :meth:`graph` blocks the channels it records."""
        owner = self.param_names.get(getattr(tensor, "name", None))
        if owner is not None and self.layers[owner[0]]._parameters.get(owner[1]) is tensor \
                and is_known_layer(self.layers[owner[0]]):
            self.direct_uses.setdefault(owner, f"{op} in {self.where()}")

    def set_origin(self, tensor, layer: str, attr: str, axes: List[Optional[int]]) -> None:
        self.origins[id(tensor)] = (tensor, layer, attr, axes)

    def labels_of(self, tensor) -> np.ndarray:
        entry = self.tensor_labels.get(id(tensor))
        if entry is not None and entry[0]() is tensor:
            return entry[1]
        node = None if tensor.stop_gradient else grad_node(tensor)
        if node is not None:
            self._block_untraced_sources(node)
        return L.zeros(tensor.ndim)

    def _block_untraced_sources(self, start) -> None:
        """Blocks the channels behind an op we did not see (``start``: its graph node)."""
        seen, frontier = set(), [start]
        while frontier and len(seen) < 100000:
            node = frontier.pop()
            ptr = node.node_ptr()
            if ptr in seen:
                continue
            seen.add(ptr)
            if ptr in self.node_labels and node is not start:
                self.block(self.node_labels[ptr][1], f"feeds an untraced op {node.name()} in "
                           f"{self.where()}", site=(node.name(), self.where()))
                continue
            frontier.extend(n for n in node.next_functions if n is not None)

    def block(self, labels: np.ndarray, reason: str, site: Optional[Tuple[str, str]] = None) -> None:
        """Blocks the channels of ``labels``; the first reason and site of an atom win.

        ``site`` is (op or layer type, layer it ran in); by default the op or layer
        being mapped now (:attr:`site`)."""
        site = site or self.site or ("", self.where())
        for atom in L.atoms(labels):
            if int(atom) not in self.blocked:
                self.blocked[int(atom)] = reason
                self.block_sites[int(atom)] = site

    def approximate(self, labels: np.ndarray, reason: str) -> None:
        """Marks channels whose removal changes the outputs even when they are dead
        (a normalization over them); the first reason of an atom wins."""
        for atom in L.atoms(labels):
            self.approximations.setdefault(int(atom), reason)

    def warn_once(self, message: str) -> None:
        """Logs ``message`` as a warning the first time it comes."""
        if message not in self.warned:
            self.warned.add(message)
            logger.warning(message)

    def refuse(self, labels: np.ndarray, reason: str) -> None:
        """Blocks channels for a reason that deserves a warning (once per reason)."""
        if L.atoms(labels).size and reason not in self.warned:
            self.warned.add(reason)
            logger.warning("channels are not pruned: their tensor %s", reason)
        self.block(labels, reason)

    def unknown_op(self, op: str, in_labels) -> None:
        """Blocks the channels flowing into an op that no rule maps (one warning per op
        and layer)."""
        where = f"{op} in {self.where()}"
        if where not in self.unknown_ops:
            logger.warning("channels flowing into op %r (in %s) are not pruned: the "
                           "tracer does not know how it maps channels", op, self.where())
        self.unknown_ops[where] = None
        for lab in in_labels:
            self.block(lab, f"flows into op {op!r} in {self.where()}, which the tracer cannot map")

    def where(self) -> str:
        return self.stack[-1] if self.stack and self.stack[-1] else TOP_LEVEL

    # -- producers -----------------------------------------------------------
    def producer_atoms(self, name: str, count: int) -> np.ndarray:
        """Atoms of a producer's output channels (the same on every call)."""
        if name not in self.layer_first_atom:
            self.layer_first_atom[name] = self.uf.add(count)
            self.producer_names.append(name)
            self.atom_layer.extend([len(self.producer_names) - 1] * count)
        first = self.layer_first_atom[name]
        return np.arange(first, first + count, dtype=np.int64)

    def record(self, layer, attr, axis, role, atom_vector, indices=None, blocks=0, along=0) -> None:
        """Records that entry ``indices[i]`` (default ``i``) of ``axis`` of the parameter
        follows ``atom_vector[i]``; ``blocks``/``along``: see
        :class:`~slim_callbacks.tracing.groups.Member`."""
        if self.layers[layer]._parameters.get(attr) is None:
            return
        indices = np.arange(len(atom_vector)) if indices is None else indices
        keep = atom_vector > 0
        key = (layer, attr, axis, role, atom_vector[keep].tobytes(), indices[keep].tobytes(), blocks)
        if keep.any() and key not in self.seen_records:  # both passes record most members
            self.seen_records.add(key)
            self.records.append(MemberRecord(layer, attr, axis, role,
                                             atom_vector[keep], indices[keep], blocks, along))

    def units_of(self, atoms: np.ndarray) -> set:
        """The units (union-find roots, so far) that ``atoms`` belong to."""
        return {self.uf.find(int(a)) for a in atoms}

    def same_units(self, a: np.ndarray, b: np.ndarray) -> bool:
        """True if the atoms ``a`` and ``b`` make up the same units (so far)."""
        return self.units_of(a) == self.units_of(b)

    def size_follows(self, owner: Tuple[str, str], atoms: np.ndarray, value: int) -> None:
        """``owner`` (layer, attribute) of ``value`` sizes the axis of ``atoms`` in a
        reshape: pruning sets it to the number of their units that stay."""
        self.sizes.setdefault(owner, atoms)
        self.size_uses.setdefault(owner, []).append(atoms)
        self.size_values[owner] = value

    def size_keeps_ratio(self, dims: tuple, reason: str) -> None:
        """A size computed from widths (``dims``, see
        :class:`~slim_callbacks.tracing.sizes.RuntimeSize`) whose factors cancel: it
        stays right if every unit removes the same share of each factor's positions,
        checked once the trace has coupled everything
        (:func:`~slim_callbacks.tracing.sizes.block_ratios_that_cannot_hold`)."""
        self.ratios.append((dims, reason))

    def union_pairs(self, pairs: np.ndarray) -> None:
        for a, b in pairs:
            self.uf.union(int(a), int(b))

    def union_all(self, atoms) -> None:
        """Couple ``atoms`` into one unit (the caller leaves out the fixed atom 0)."""
        atoms = [int(a) for a in atoms]
        for other in atoms[1:]:
            self.uf.union(atoms[0], other)

    def roots_of(self, atoms) -> np.ndarray:
        """The union-find root of each of ``atoms``, so far."""
        return np.array([self.uf.find(int(a)) for a in atoms])

    def graph(self) -> DependencyGraph:
        for record in self.records:
            use = self.direct_uses.get((record.layer, record.attr))
            if use is not None:
                self.refuse(record.atoms, f"is sliced in {record.layer}.{record.attr}, which "
                                          f"{use} also uses directly (a tied weight)")
        segments, fallbacks = settle(self, unique_convs(self.grouped))
        block_sizes_that_cannot_follow(self)
        block_ratios_that_cannot_hold(self)
        groups = build_groups(self.uf, np.array(self.atom_layer), self.layer_order,
                              self.producer_names, self.records, self.blocked,
                              self.block_sites, self.approximations, self.sizes, segments)
        return DependencyGraph(groups, self.layer_types, self.param_names,
                               list(self.unknown_ops), self.structure, fallbacks,
                               {name: n // 2 for name, n in self.calls.items()},
                               table_of(self))

