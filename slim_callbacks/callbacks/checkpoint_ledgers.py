"""Every checkpoint a pruning fit saves gets its pruning ledger beside it.

:class:`CheckpointLedgers` replaces ``model.save`` (which Paddle's ``ModelCheckpoint``
calls too) with a hook (:func:`~slim_callbacks.callbacks.paddle_hooks.install_save_hook`)
that names the checkpoint by its global epoch when a run was resumed, refuses to write
over a checkpoint of an earlier session, and writes the ledger
(:mod:`slim_callbacks.callbacks.ledger`) after the weights. With an accuracy budget the
ledger of an epoch's checkpoint waits for that epoch's eval (:meth:`close_epoch`): a run
killed before the eval judged the event leaves a checkpoint without a ledger, which
``--resume`` never picks.
"""
from __future__ import annotations

import os
from typing import Callable, List

from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks.ledger import Cursor, Ledger
from slim_callbacks.callbacks.paddle_hooks import install_save_hook
from slim_callbacks.core.errors import SlimError
from slim_callbacks.pruning.state import PruningEvent


class CheckpointLedgers:
    """The ledgers of one fit's checkpoints (see the module docstring).

    Args:
        ledger: returns the ledger of the network as it is now.
    """

    def __init__(self, ledger: Callable[[], dict]):
        self.ledger = ledger
        self.epoch_offset = 0
        self.written: set = set()      # paths this run saved
        self.unjudged: List[str] = []  # saved since an event whose eval has not come yet
        self.awaiting_eval = False

    def path(self, path: str) -> str:
        """``<dir>/<local epoch>`` (ModelCheckpoint's name) -> ``<dir>/<global epoch>``."""
        head, tail = os.path.split(os.fspath(path))
        if self.epoch_offset and tail.isdigit():
            return os.path.join(head, str(int(tail) + self.epoch_offset))
        return os.fspath(path)

    def check_not_earlier_session(self, path: str) -> None:
        if path not in self.written and os.path.exists(ledger_mod.ledger_path(path)):
            raise SlimError(f"{path} holds a checkpoint of an earlier run (its ledger "
                            f"{ledger_mod.ledger_path(path)} exists): save to an empty "
                            f"save_dir, or resume that run with resume_from")

    def install(self, model, owner) -> None:
        """Makes every ``model.save(path)`` go through this object."""
        install_save_hook(model, owner, self.path, self.check_not_earlier_session, self.write)

    def write(self, path: str) -> None:
        """The ledger of a checkpoint just saved at ``path`` (later if an eval is due)."""
        self.written.add(path)
        if self.awaiting_eval:
            self.unjudged.append(path)
            return
        ledger_mod.save_ledger(path, self.ledger())

    def close_epoch(self) -> None:
        """The epoch's eval has judged (or there was none): the waiting ledgers are written."""
        self.awaiting_eval = False
        for path in self.unjudged:
            self.write(path)
        self.unjudged = []

    def save_again(self, model) -> None:
        """Saves the waiting checkpoints again (an event was undone after they were saved)."""
        original = getattr(model.save, "_slim_original", model.save)
        for path in self.unjudged:
            original(path, True)


def run_ledger(callback) -> dict:
    """The pruning ledger of a ``PruneCallback``'s network as it is now."""
    return Ledger(fingerprint=callback.fingerprint, input_shape=callback.example_inputs.to_data(),
                  criterion=callback.criterion.name, original_widths=callback.original_widths,
                  param_names=ledger_mod.tensor_names(callback.network),
                  plan=callback.plan.to_dict(),
                  history=[PruningEvent.from_dict(h) for h in callback.history],
                  epochs=callback.total_epochs,
                  cursor=Cursor.at(callback.last_epoch, callback.history, callback.targets),
                  schedule=callback.schedule.to_dict(),
                  budget=None if callback.budget is None else callback.budget.to_dict(),
                  verify=["eval"] if callback.forward_fn is not None else None).to_dict()
