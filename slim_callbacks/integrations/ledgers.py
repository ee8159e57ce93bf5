"""The pruning ledger of a :class:`~slim_callbacks.Pruner` run inside a toolkit's trainer:
what the adapters write beside each checkpoint the trainer saves, so that
:func:`~slim_callbacks.load_pruned` rebuilds the pruned model from a fresh original one.

Examples:
    >>> import paddle
    >>> from slim_callbacks.callbacks.ledger import fingerprint
    >>> net = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 2))
    >>> original = fingerprint(net)
    >>> pruner = Pruner(net, [1, 4], ratios=0.5, schedule={0: 0.5}).prepare()
    >>> _ = pruner.step(0)
    >>> record = pruner_ledger(pruner, original, epoch=0, epochs=2)
    >>> record.input_shape, record.cursor.done, record.plan["groups"][0]["after"]
    ([1, 4], [0], 4)
"""
from __future__ import annotations

from typing import List, Optional

from slim_callbacks.callbacks.ledger import Cursor, Ledger, tensor_names
from slim_callbacks.pruning.pruner import Pruner
from slim_callbacks.pruning.state import PruningEvent


def pruner_ledger(pruner: Pruner, original: str, epoch: int, epochs: Optional[int] = None,
                  verify: Optional[List[str]] = None) -> Ledger:
    """The ledger of ``pruner``'s network after global ``epoch`` (0-based; -1 before
    the first one ends).

    Args:
        pruner: the prepared pruner of the trainer's model.
        original: the :func:`~slim_callbacks.callbacks.ledger.fingerprint` of the
            model before any pruning.
        epochs: the trainer's total epochs, if known.
        verify: the modes a replay checks without ``forward_fn`` (default: eval, and
            train too when the inputs alone call the network in train mode).
    """
    if verify is None and pruner.example_inputs.forward_fn is not None:
        verify = ["eval"]
    return Ledger(
        fingerprint=original, input_shape=pruner.example_inputs.to_data(),
        criterion=getattr(pruner.spec.criterion, "name", pruner.spec.criterion),
        original_widths=dict(pruner.original_widths), param_names=tensor_names(pruner.network),
        plan=pruner.plan.to_dict(), history=[PruningEvent.from_dict(h) for h in pruner.history],
        epochs=epochs, cursor=Cursor.at(epoch, pruner.history, pruner.targets), schedule=None,
        verify=verify)
