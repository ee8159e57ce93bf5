"""Resuming a pruning run from one of its checkpoints.

:func:`resolve_source` turns ``resume_from`` (a prefix, or a directory: its newest
complete checkpoint) into a prefix; :func:`load_source` reads and checks its ledger
against the network, the files and ``fit(epochs=...)``; :func:`restore` replays the
ledger on network and optimizer and loads the checkpoint's weights and optimizer state.
Everything that can refuse does so before any weight changes.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping, Optional, Tuple

import paddle

from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks.ledger import Cursor, Ledger
from slim_callbacks.callbacks.paddle_hooks import load_optimizer_state, rebuild_reducer
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.engine.plan import PruningPlan

logger = logging.getLogger("slim_callbacks.callbacks.prune")


def resolve_source(resume_from) -> str:
    """The checkpoint prefix of ``resume_from``: itself, or for a directory its newest
    complete checkpoint (:func:`~slim_callbacks.callbacks.ledger.latest_checkpoint`)."""
    source = os.fspath(resume_from)
    if os.path.isdir(source):
        source = ledger_mod.latest_checkpoint(source)
    return source


def load_source(source: str, network, need_optimizer: bool, epochs: Optional[int]) -> dict:
    """The checked ledger of the checkpoint ``source`` (as :func:`load_ledger` returns it).

    Raises:
        SlimError: a missing or damaged ledger, another architecture, missing or foreign
            files, or a run with no epoch left.
        ConfigError: ``epochs`` differs from the total epochs of the run that wrote it.
    """
    resumed = ledger_mod.load_ledger(source)
    ledger_mod.check_fingerprint(network, resumed, f"{source} ")
    # Model.load reads the .pdparams: that file is checked, a .safetensors beside it unused
    ledger_mod.check_checkpoint_files(source, resumed, need_optimizer=need_optimizer,
                                      safetensors=False)
    done, total = resumed["cursor"]["epoch"], resumed.get("epochs")
    if epochs is not None and total is not None and epochs != total:
        raise ConfigError("fit(epochs=...)", epochs,
                          f"{total}, the total epochs of the run that wrote {source} "
                          f"(the resumed fit starts at epoch {done + 1} and stops after "
                          f"epoch {total - 1})")
    if epochs is not None and done + 1 >= epochs:
        raise SlimError(f"{source} is the last epoch ({done}) of a {epochs}-epoch run: "
                        f"nothing is left to train")
    return resumed


def check_same_events(cursor: Cursor, targets: Mapping[int, Mapping[str, float]], source) -> None:
    """SlimError unless ``targets`` are the events the resumed run scheduled."""
    if not cursor.schedules(targets):
        raise SlimError(f"the schedule or ratios differ from those of {source}: "
                        f"resume with the same PruneCallback arguments")


def restore(model, prefix: str, ledger: dict, forward_fn=None) -> Tuple[PruningPlan, bool]:
    """Replays ``ledger`` on ``model``'s network and optimizer, then loads the
    checkpoint's weights and (if there is one) optimizer state; returns the replayed
    plan and whether an optimizer state was loaded."""
    network, optimizer = model.network, getattr(model, "_optimizer", None)
    plan = ledger_mod.replay(network, ledger, optimizer, forward_fn)
    # weights by structural key; optimizer state re-keyed to this run's tensor
    # names (they differ when the network was built after another one in-process)
    model.load(prefix, reset_optimizer=True)
    loaded = optimizer is not None and os.path.exists(prefix + ledger_mod.OPTIMIZER)
    if loaded:
        state = ledger_mod.rename_optimizer_state(
            paddle.load(prefix + ledger_mod.OPTIMIZER), ledger.get("param_names", {}),
            ledger_mod.tensor_names(network))
        load_optimizer_state(model, state)
    rebuild_reducer(model)
    return plan, loaded


def replay(callback, ledger: dict) -> None:
    """Resumes ``callback`` (a ``PruneCallback`` whose pruner is prepared) from the
    checkpoint ``callback.resume_from``: its events checked against the ledger's, the
    budget's state loaded, the ledger's plan replayed on network and optimizer, then the
    checkpoint's weights and optimizer state."""
    record = Ledger.from_dict(ledger)
    check_same_events(record.cursor, callback.targets, callback.resume_from)
    if callback.budget is not None and record.budget:
        callback.budget.load(record.budget)
    prefix = str(callback.resume_from)
    callback.last_epoch = record.cursor.epoch
    plan, loaded = restore(callback.model, prefix, ledger, callback.forward_fn)
    callback.pruner.adopt(plan, [h.to_dict() for h in record.history])
    if callback.optimizer is not None and not loaded:
        logger.warning("resumed from %s without %s: the optimizer state starts afresh "
                       "(reset_optimizer=True)", prefix, ledger_mod.OPTIMIZER)
    logger.info("resumed from %s: %d pruning events replayed, next epoch %d", prefix,
                len(callback.history), callback.epoch_offset)

