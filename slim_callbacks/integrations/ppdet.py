"""Pruning inside PaddleDetection's ``Trainer``: ``PruneDetCallback``.

The callback builds a :class:`~slim_callbacks.Pruner` on ``trainer.model`` and
``trainer.optimizer`` when training begins and takes the events of its schedule between
epochs: ``{0: 0.3}`` prunes after the first epoch (0-based, as in
:mod:`slim_callbacks.integrations.paddlenlp`). The event runs when the next epoch
begins, after ppdet has saved the epoch's checkpoint and put the raw weights back
from the EMA; the optimizer's moments and the EMA's tensors (``trainer.ema.state_dict``)
are sliced exactly like their parameters. Beside every checkpoint ppdet writes
(``<save_dir>/<filename>/<epoch>`` or ``model_final``), the callback writes the pruning
ledger ``<prefix>.pruning.json``, so the pruned model reloads (weights are ppdet's own
``.pdparams``; with EMA on, they are the EMA's; ``load_pruned`` is
:func:`slim_callbacks.load_pruned`)::

    trainer = Trainer(cfg, mode="eval")                 # a fresh, unpruned detector
    load_pruned(trainer.model, "output/ppyoloe/model_final", load_weights=False)  # widths
    trainer.load_weights("output/ppyoloe/model_final")  # then ppdet's loader

Example inputs say how the detector is called: one dict for eval and train, with the
targets its loss needs (see :mod:`slim_callbacks.core.example_inputs`). ppdet is
imported when the class is first used (a SlimError says how to install it)::

    from slim_callbacks.integrations.ppdet import PruneDetCallback
    trainer = Trainer(cfg, mode="train")
    trainer.register_callbacks([PruneDetCallback(trainer, batch, ratios=0.3, schedule={0: 0.3})])
    trainer.train()

One device only: ``Trainer.train`` wraps the model in ``DataParallel`` (or
``to_static``) once, and such a wrapper does not follow a change of structure.
"""
from __future__ import annotations

import logging
import os
from typing import Optional

from slim_callbacks.callbacks.ledger import Ledger, fingerprint, save_ledger
from slim_callbacks.integrations import require
from slim_callbacks.integrations.ledgers import pruner_ledger
from slim_callbacks.pruning.pruner import Pruner

logger = logging.getLogger(__name__)
_DEFINED = {}


def __getattr__(name: str):
    """``PruneDetCallback``, defined on first use (it subclasses ppdet's ``Callback``)."""
    if name != "PruneDetCallback":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _DEFINED:
        _DEFINED[name] = _define(require("ppdet.engine.callbacks", "ppdet").Callback)
    return _DEFINED[name]


def cut_ema(ema, plan) -> int:
    """Slices the EMA's tensors (``ModelEMA.state_dict``, keyed like the model's state
    dict) as ``plan`` sliced their parameters; the number cut."""
    state = getattr(ema, "state_dict", None)
    return len(plan.cut_state(state)) if isinstance(state, dict) else 0


def checkpoint_name(cfg, status) -> Optional[str]:
    """The name ppdet's ``Checkpointer`` gives the checkpoint of this epoch end, if any."""
    epoch, last = status["epoch_id"], cfg.get("epoch", 0) - 1
    if status.get("mode") == "eval":
        return "best_model" if status.get("save_best_model") else None
    if status.get("mode") == "train" and ((epoch + 1) % cfg.get("snapshot_epoch", 1) == 0
                                          or epoch == last):
        return "model_final" if epoch == last else str(epoch)
    return None


def _define(base: type) -> type:
    class PruneDetCallback(base):
        """A ``ppdet.engine.callbacks.Callback`` that prunes the trainer's model.

        Args:
            trainer: the ``ppdet.engine.Trainer`` (ppdet's callbacks take it first).
            example_inputs: a batch dict with ``image``, ``im_shape``, ``scale_factor``
                and the targets its loss needs (the model's one argument), or inputs as
                :class:`~slim_callbacks.Pruner` takes them.
            spec: a :class:`~slim_callbacks.PruningSpec`, or its fields as keywords.
            schedule: ``{epoch: ratio}`` or a schedule (default: one shot at epoch 0).
            forward_fn: ``(model, inputs) -> outputs`` for a model called otherwise.
        """

        def __init__(self, trainer, example_inputs, spec=None, *, schedule=None,
                     forward_fn=None, **spec_fields):
            super().__init__(trainer)
            self.options = dict(spec=spec, schedule=schedule, forward_fn=forward_fn, **spec_fields)
            # a detector's forward takes ONE dict (a bare dict would be keywords)
            self.example_inputs = (example_inputs,) if isinstance(example_inputs, dict) else example_inputs
            self.pruner: Optional[Pruner] = None
            self.original = None  # fingerprint of the unpruned model
            self.next_epoch = 0   # the first epoch whose beginning is not handled yet
            self.written = {}     # checkpoint prefix -> mtime of the .pdparams its ledger vouches for

        @property
        def trainer(self):
            return self.model  # ppdet's name for the trainer

        def on_train_begin(self, status):
            trainer = self.trainer
            self.original = fingerprint(trainer.model)
            self.pruner = Pruner(trainer.model, self.example_inputs, optimizer=trainer.optimizer,
                                 **self.options)
            self.pruner.prepare()
            self.next_epoch = status.get("epoch_id", 0)
            late = [e for e in self.pruner.targets if e >= trainer.cfg.get("epoch", 0) - 1]
            if late:
                logger.warning("pruning events at epochs %s come after the last epoch: "
                               "they are not taken", late)

        def on_epoch_begin(self, status):
            epoch = status["epoch_id"]
            if status.get("mode", "train") != "train" or epoch < self.next_epoch:
                return  # ppdet's evaluation calls this hook again for the same epoch
            self.next_epoch = epoch + 1
            if epoch > 0:
                self.prune_after(epoch - 1)

        def prune_after(self, epoch: int):
            """Takes the event scheduled after ``epoch``; its plan or None."""
            plan = self.pruner.step(epoch)
            if plan is not None and len(plan):
                cut = cut_ema(getattr(self.trainer, "ema", None), plan)
                before, after = self.pruner.history[-1]["macs"]
                logger.info("after epoch %d: pruned %d groups (%d EMA tensors), MACs %s -> %s",
                            epoch, len(plan), cut, before, after)
            return plan

        def on_epoch_end(self, status):
            cfg = self.trainer.cfg
            name = checkpoint_name(cfg, status)
            if name is None or self.pruner is None:
                return
            prefix = os.path.join(cfg.get("save_dir", "output"), cfg.get("filename", ""), name)
            stamp = os.stat(prefix + ".pdparams").st_mtime_ns if os.path.exists(prefix + ".pdparams") else None
            if stamp is not None and self.written.get(prefix) != stamp:  # ppdet just wrote it
                save_ledger(prefix, self.ledger(status["epoch_id"]).to_dict())
                self.written[prefix] = stamp

        def ledger(self, epoch: int) -> Ledger:
            """The pruning ledger of the checkpoint written at the end of ``epoch``; a
            replay checks eval mode only (zeros for targets need not suit the loss)."""
            return pruner_ledger(self.pruner, self.original, epoch,
                                 self.trainer.cfg.get("epoch"), verify=["eval"])

    PruneDetCallback.__module__ = __name__
    return PruneDetCallback
