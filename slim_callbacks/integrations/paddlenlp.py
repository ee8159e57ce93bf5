"""Pruning inside PaddleNLP's ``Trainer``: ``PruneTrainerCallback``.

The callback builds a :class:`~slim_callbacks.Pruner` on the trainer's model and
optimizer when training begins (AdamW's moments are sliced with the weights) and calls
its ``step`` at the end of every epoch, so it prunes at the epochs of its schedule
(0-based: ``{0: 0.3}`` prunes after the first epoch). Example inputs say how the model
is called, e.g. ``{"input_ids": {"shape": [1, 64], "dtype": "int64"}}``. paddlenlp is
imported when the class is first used (a SlimError says how to install it)::

    from slim_callbacks.integrations.paddlenlp import PruneTrainerCallback
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[PruneTrainerCallback(
        {"input_ids": {"shape": [1, 64], "dtype": "int64"}}, ratios=0.3, schedule={0: 0.3},
        structure={"attention": "heads"})])

Beside every checkpoint the trainer saves (``<output_dir>/checkpoint-<step>``) the
callback writes the pruning ledger ``model_state.pruning.json`` (after
``trainer.save_model(folder)``, call ``callback.write_ledger(folder)``). The pruned
model then reloads from a fresh one built from the saved (original) config::

    model = ErnieForSequenceClassification(ErnieConfig.from_pretrained(folder))
    load_pruned(model, os.path.join(folder, "model_state"))   # widths, then weights

:func:`ernie` builds a small ERNIE sequence classifier from paddlenlp's own classes (no
weights): the model recipes name as ``model.name: ernie``.
"""
from __future__ import annotations

import logging
import math
import os

import paddle  # noqa: F401  (the examples)

from slim_callbacks.callbacks.ledger import fingerprint, save_ledger
from slim_callbacks.integrations import require
from slim_callbacks.integrations.ledgers import pruner_ledger
from slim_callbacks.pruning.pruner import Pruner

logger = logging.getLogger(__name__)
_DEFINED = {}
WEIGHTS = "model_state"  # the trainer's <checkpoint>/model_state.pdparams


def __getattr__(name: str):
    """``PruneTrainerCallback``, defined on first use (it subclasses paddlenlp's class)."""
    if name != "PruneTrainerCallback":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _DEFINED:
        _DEFINED[name] = _define(require("paddlenlp.trainer", "paddlenlp").TrainerCallback)
    return _DEFINED[name]


def ernie(num_classes: int = 2, vocab_size: int = 1000, hidden_size: int = 64,
          num_hidden_layers: int = 2, num_attention_heads: int = 4, intermediate_size: int = 128,
          max_position_embeddings: int = 64, type_vocab_size: int = 2):
    """``paddlenlp.transformers.ErnieForSequenceClassification`` of this size, randomly
    initialized; ``forward(input_ids, token_type_ids)`` gives ``[batch, num_classes]``
    logits.

    Examples:
        >>> net = ernie(num_classes=3, vocab_size=50, hidden_size=16, intermediate_size=32)
        >>> ids = paddle.zeros([2, 8], "int64")
        >>> list(net(ids, ids).shape)
        [2, 3]
    """
    transformers = require("paddlenlp.transformers", "paddlenlp")
    return transformers.ErnieForSequenceClassification(transformers.ErnieConfig(
        num_classes=num_classes, vocab_size=vocab_size, hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size, max_position_embeddings=max_position_embeddings,
        type_vocab_size=type_vocab_size))


def _define(base: type) -> type:
    class PruneTrainerCallback(base):
        """A ``paddlenlp.trainer.TrainerCallback`` that prunes the trainer's model.

        Args:
            example_inputs: how the model is called (see :class:`~slim_callbacks.Pruner`).
            spec: a :class:`~slim_callbacks.PruningSpec`, or its fields as keywords.
            schedule: ``{epoch: ratio}`` or a schedule (default: one shot at epoch 0).
            forward_fn: ``(model, inputs) -> outputs`` for a model called otherwise.
        """

        def __init__(self, example_inputs, spec=None, *, schedule=None, forward_fn=None,
                     **spec_fields):
            self.options = dict(spec=spec, schedule=schedule, forward_fn=forward_fn, **spec_fields)
            self.example_inputs = example_inputs
            self.pruner = None
            self.original = None  # fingerprint of the unpruned model
            self.epochs = None
            self.last_epoch = -1  # the last epoch ended (0-based)

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            self.original = fingerprint(model)
            self.epochs = int(math.ceil(args.num_train_epochs))
            self.pruner = Pruner(model, self.example_inputs, optimizer=optimizer, **self.options)
            self.pruner.prepare()

        def on_epoch_end(self, args, state, control, **kwargs):
            epoch = max(int(round(state.epoch or 0)) - 1, 0)
            self.last_epoch = epoch
            plan = self.pruner.step(epoch)
            if plan is not None:
                before, after = self.pruner.history[-1]["macs"]
                logger.info("epoch %d: pruned %d groups, MACs %s -> %s", epoch, len(plan), before, after)

        def on_save(self, args, state, control, **kwargs):
            """The trainer has just saved ``checkpoint-<step>``: its ledger beside it."""
            folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            if self.pruner is not None and args.should_save and os.path.isdir(folder):
                self.write_ledger(folder)

        def write_ledger(self, folder: str) -> str:
            """Writes ``<folder>/model_state.pruning.json`` for the weights the trainer
            saved in ``folder`` (call it after ``trainer.save_model(folder)``); its path."""
            return save_ledger(os.path.join(folder, WEIGHTS), pruner_ledger(
                self.pruner, self.original, self.last_epoch, self.epochs).to_dict())

    PruneTrainerCallback.__module__ = __name__
    return PruneTrainerCallback
