"""Paddle specifics in one place: layer kinds, mode and state preservation, ranks.

Everything that asks "what kind of layer is this?" or touches Paddle internals that
may move between releases goes through here, so a Paddle upgrade is one file to read.

Examples:
    >>> import paddle
    >>> conv = paddle.nn.Conv2D(3, 8, 3)
    >>> is_conv(conv), is_transposed_conv(conv), is_linear(conv)
    (True, False, False)
    >>> net = paddle.nn.Sequential(conv, paddle.nn.BatchNorm2D(8))
    >>> with preserved_state(net):
    ...     _ = net.train()(paddle.randn([2, 3, 8, 8]))   # updates BN statistics...
    >>> float(net[1]._mean.abs().sum())                    # ...which are restored
    0.0
"""
from __future__ import annotations

import contextlib
import copy
import sys
from typing import Iterator, List, Optional, Tuple

import paddle


def unwrap(network: paddle.nn.Layer) -> paddle.nn.Layer:
    """The user's network inside a ``paddle.DataParallel`` (or the network itself)."""
    return getattr(network, "_layers", network) if isinstance(network, paddle.DataParallel) else network


def layer_table(network: paddle.nn.Layer) -> dict:
    """Structural name -> layer for ``network`` and every sublayer; the network itself
    is ``""`` (it may own parameters too, such as a ViT's position embedding).

    >>> list(layer_table(paddle.nn.Sequential(paddle.nn.ReLU())))
    ['', '0']
    """
    return dict(unwrap(network).named_sublayers(include_self=True))


def is_conv(layer) -> bool:
    """Any Conv1D/2D/3D, transposed or not."""
    from paddle.nn.layer.conv import _ConvNd
    return isinstance(layer, _ConvNd)


def is_transposed_conv(layer) -> bool:
    """Conv1D/2D/3DTranspose: weight ``[C_in, C_out / groups, k...]``."""
    return isinstance(layer, (paddle.nn.Conv1DTranspose, paddle.nn.Conv2DTranspose,
                              paddle.nn.Conv3DTranspose))


def is_batch_norm(layer) -> bool:
    """BatchNorm1D/2D/3D, SyncBatchNorm and the legacy ``paddle.nn.BatchNorm``."""
    from paddle.nn.layer.norm import _BatchNormBase
    return isinstance(layer, (_BatchNormBase, paddle.nn.BatchNorm))


def is_linear(layer) -> bool:
    return isinstance(layer, paddle.nn.Linear)


def is_embedding(layer) -> bool:
    """``paddle.nn.Embedding``: a table ``[num_embeddings, embedding_dim]`` looked up by ids."""
    return isinstance(layer, paddle.nn.Embedding)


def is_prelu(layer) -> bool:
    """``paddle.nn.PReLU``: one slope per channel (``_weight``), or one for all."""
    return isinstance(layer, paddle.nn.PReLU)


def is_group_norm(layer) -> bool:
    """``paddle.nn.GroupNorm``: normalizes each of ``_num_groups`` equal channel groups."""
    return isinstance(layer, paddle.nn.GroupNorm)


def is_layer_norm(layer) -> bool:
    """``paddle.nn.LayerNorm``: normalizes over its last axes (``_normalized_shape``)."""
    return isinstance(layer, paddle.nn.LayerNorm)


@contextlib.contextmanager
def modes_restored(network: paddle.nn.Layer, training: Optional[bool] = None) -> Iterator[None]:
    """Restores every sublayer's train/eval flag when the block ends; with
    ``training`` set, the block runs in that mode (``False``: eval)."""
    modes = [(layer, layer.training) for layer in network.sublayers(include_self=True)]
    try:
        if training is not None:
            network.train() if training else network.eval()
        yield
    finally:
        for layer, mode in modes:
            layer.training = mode


@contextlib.contextmanager
def dygraph_forwards() -> Iterator[None]:
    """Forwards converted with ``paddle.jit.to_static`` run as plain dygraph inside the
    block (tracing and counting hook the dygraph ops)."""
    from paddle.jit.dy2static.program_translator import ProgramTranslator

    translator = ProgramTranslator()
    enabled = translator.enable_to_static
    translator.enable(False)
    try:
        yield
    finally:
        translator.enable(enabled)


def require_dygraph(what: str = "the network") -> None:
    """Raises SlimError when paddle is in static mode (``paddle.enable_static()``)."""
    if not paddle.in_dynamic_mode():
        from slim_callbacks.core.errors import SlimError

        raise SlimError(f"{what} was built in static mode (paddle.enable_static()); "
                        f"slim_callbacks prunes dygraph networks: build it without "
                        f"enable_static - for a static graph, convert its forward with "
                        f"paddle.jit.to_static, which is pruned and trained as usual")


def reset_static_programs(network: paddle.nn.Layer) -> None:
    """Drops the programs ``paddle.jit.to_static`` built for ``network``'s forwards, so
    the next call converts them again for the parameters' new shapes."""
    from paddle.jit.dy2static.program_translator import StaticFunction

    for layer in network.sublayers(include_self=True):
        forward = getattr(layer, "forward", None)  # a decorated method's bound copy too
        if isinstance(forward, StaticFunction):
            forward.program_cache.clear()


@contextlib.contextmanager
def preserved_state(network: paddle.nn.Layer) -> Iterator[None]:
    """Restores train/eval flags, non-trainable tensors (BatchNorm running
    statistics, buffers), the attributes a forward set (:func:`attributes_restored`)
    and the global RNG state when the block ends, so train-mode forward passes inside
    it change nothing. Forwards run as dygraph inside it (:func:`dygraph_forwards`)."""
    frozen = {id(t): t for t in network.state_dict().values() if t.stop_gradient}
    saved = [(t, t.numpy().copy()) for t in frozen.values()]
    rng = paddle.get_rng_state()
    with modes_restored(network), attributes_restored(network), dygraph_forwards():
        try:
            yield
        finally:
            paddle.set_rng_state(rng)
            for tensor, array in saved:
                tensor.set_value(array)


@contextlib.contextmanager
def attributes_restored(network: paddle.nn.Layer) -> Iterator[None]:
    """Puts back every attribute of every layer of ``network`` that the block set,
    added or removed (plain attributes and tensor buffers), when the block ends: a
    forward that stores its inputs (``self.inputs = inputs``) leaves nothing behind.
    Values are restored by identity; what a forward changed inside an object is not.

    >>> class Keeps(paddle.nn.Layer):
    ...     def forward(self, x):
    ...         self.inputs, self.seen = x, True
    ...         raise RuntimeError("no targets")
    >>> net = Keeps()
    >>> try:
    ...     with attributes_restored(net):
    ...         net(paddle.zeros([1]))
    ... except RuntimeError:
    ...     pass
    >>> hasattr(net, "inputs"), hasattr(net, "seen")
    (False, False)
    """
    saved = [(layer, dict(vars(layer)), dict(layer._buffers),
              set(layer._non_persistable_buffer_names_set))
             for layer in network.sublayers(include_self=True)]
    try:
        yield
    finally:
        for layer, attrs, buffers, non_persistable in saved:
            current = vars(layer)
            for key in [k for k in current if k not in attrs]:
                del current[key]
            current.update((k, v) for k, v in attrs.items() if current.get(k) is not v)
            layer._buffers.clear()
            layer._buffers.update(buffers)
            layer._non_persistable_buffer_names_set.clear()
            layer._non_persistable_buffer_names_set.update(non_persistable)


#: modules that hold ``_C_ops`` built-ins under their own names: ``paddle.tensor.matmul``
#: is ``_C_ops.matmul`` itself (``paddle.nn.MultiHeadAttention`` calls it)
OP_ALIAS_MODULES = ("paddle.tensor", "paddle.tensor.linalg", "paddle.linalg")


def op_aliases() -> List[Tuple[object, str, object]]:
    """``(module, name, built-in)`` for every attribute of :data:`OP_ALIAS_MODULES` that is
    one of the current ``paddle._C_ops`` built-ins, so code that wraps ``_C_ops``
    functions can wrap these too (call it before replacing any of them).

    >>> any(name == "matmul" for _, name, _ in op_aliases())
    True
    """
    from paddle import _C_ops
    builtins = {id(f) for f in vars(_C_ops).values() if type(f).__name__ == "builtin_function_or_method"}
    return [(module, name, func)
            for module in (sys.modules.get(m) for m in OP_ALIAS_MODULES) if module is not None
            for name, func in list(vars(module).items()) if id(func) in builtins]


def is_rank0() -> bool:
    """True on the process that writes files and prints (rank 0, or no data parallel)."""
    return paddle.distributed.get_rank() == 0


def model_input_shape(model) -> Optional[List[int]]:
    """One example input of a ``paddle.Model``: its first InputSpec with the batch set
    to 1 and unknown dims (None, -1) to 1; None without an InputSpec.

    >>> net = paddle.nn.Linear(4, 2)
    >>> model_input_shape(paddle.Model(net, inputs=[paddle.static.InputSpec([None, 4], "float32", "x")]))
    [1, 4]
    """
    specs = getattr(model, "_inputs", None) or []
    shape = getattr(specs[0], "shape", None) if isinstance(specs, (list, tuple)) and specs else None
    if shape is None:
        return None
    return [1] + [int(d) if d not in (None, -1) else 1 for d in list(shape)[1:]]


def model_example_inputs(model):
    """Example inputs of a ``paddle.Model`` from its InputSpecs (batch and unknown dims
    set to 1): one float32 input's shape, else the list of InputSpecs; None without
    specs the user gave (Paddle makes ``[None]`` placeholders from ``forward``'s
    argument names, which say nothing of the shapes).

    >>> from paddle.static import InputSpec
    >>> net = paddle.nn.Linear(4, 2)
    >>> model_example_inputs(paddle.Model(net, inputs=[InputSpec([None, 4], "float32", "x")]))
    [1, 4]
    >>> model_example_inputs(paddle.Model(net)) is None
    True
    """
    specs = getattr(model, "_inputs", None)
    if not isinstance(specs, (list, tuple)) or not specs or any(
            len(getattr(s, "shape", None) or ()) < 2 for s in specs):
        return None
    if len(specs) == 1 and str(specs[0].dtype).endswith("float32"):
        return model_input_shape(model)
    return [paddle.static.InputSpec([1, *s.shape[1:]], s.dtype, s.name) for s in specs]


#: the attributes of a ``paddle.nn.Layer`` that hold its forward hooks
HOOK_ATTRIBUTES = ("_forward_pre_hooks", "_forward_post_hooks",
                   "_forward_pre_hooks_with_kwargs_flag", "_forward_post_hooks_with_kwargs_flag")


def copy_without_hooks(network: paddle.nn.Layer) -> paddle.nn.Layer:
    """A deep copy of ``network`` whose layers have no forward hooks (a hook is a bound
    method: copying it would copy its owner, and the copy would run it).

    >>> net = paddle.nn.Linear(2, 2)
    >>> _ = net.register_forward_pre_hook(lambda layer, inputs: None)
    >>> len(copy_without_hooks(net)._forward_pre_hooks), len(net._forward_pre_hooks)
    (0, 1)
    """
    memo = {}
    for layer in network.sublayers(include_self=True):
        for name in HOOK_ATTRIBUTES:
            hooks = getattr(layer, name, None)
            if hooks is not None:
                memo[id(hooks)] = type(hooks)()
    return copy.deepcopy(network, memo)


def fit_evaluates(model) -> bool:
    """Inside ``paddle.Model.fit`` (from train begin on): whether it was given eval data."""
    return getattr(model, "_test_dataloader", None) is not None
