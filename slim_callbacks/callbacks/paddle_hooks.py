"""The Paddle internals ``PruneCallback`` touches: ``paddle.Model`` and DataParallel.

- :func:`rebuild_reducer`: ``model._adapter.ddp_model._reducer`` rebuilt after the
  parameters changed shape;
- :func:`install_save_hook`: ``model.save`` replaced by a wrapper (ModelCheckpoint calls
  it too) that renames, checks and completes every checkpoint.

These rely on attributes that are not public Paddle API; a Paddle upgrade should start
here.
"""
from __future__ import annotations

from typing import Callable

import paddle

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.paddle_utils import unwrap


def rebuild_reducer(model) -> None:
    """Rebuilds DataParallel's gradient buckets for the new shapes.

    ``paddle.DataParallel`` builds its EagerReducer (buckets and per-parameter
    all-reduce hooks) at construction. Measured on Paddle 3.3.1 (two gloo ranks):
    the reducer concatenates the current gradients at every step, so even the old
    buckets still all-reduce the pruned gradients exactly; the rebuild keeps bucket
    sizes true and guards versions that size buffers at construction. The old
    reducer's hooks stay registered on the parameters but do nothing unless
    ``prepare_for_backward`` is called on it, which only the current ``_reducer``
    gets; it is kept alive because its hooks point at it. Parameters and buffers
    are re-broadcast from rank 0 so every rank continues from identical weights.
    """
    adapter = getattr(model, "_adapter", None)
    ddp = getattr(adapter, "ddp_model", None)
    if ddp is None or paddle.distributed.get_world_size() <= 1:
        return
    retired = getattr(ddp, "_slim_retired_reducers", [])
    retired.append(ddp._reducer)
    ddp._slim_retired_reducers = retired
    ddp.init_reducer()
    from paddle.distributed.parallel import sync_params_buffers
    sync_params_buffers(unwrap(ddp), fuse_params=False)


def load_optimizer_state(model, state: dict) -> None:
    """Loads an optimizer state dict into a prepared ``paddle.Model``'s optimizer."""
    model._adapter.load([], state)


def install_save_hook(model, owner, rename: Callable[[str], str],
                      before: Callable[[str], None], after: Callable[[str], None]) -> None:
    """Makes every ``model.save(path, training)`` save to ``rename(path)``, with
    ``before(path)`` and ``after(path)`` around it for training saves on local rank 0.

    Installed once per ``owner``; a hook of another owner is replaced (the original
    ``save`` is kept). An OSError of the save becomes a SlimError naming the path.
    """
    current = getattr(model.save, "_slim_pruner", None)
    if current is owner:
        return
    original = getattr(model.save, "_slim_original", model.save)

    def save(path, training=True):
        path = rename(path)
        rank0 = paddle.distributed.ParallelEnv().local_rank == 0
        if training and rank0:
            before(path)
        try:
            original(path, training)
        except OSError as err:
            raise SlimError(f"could not save the checkpoint {path}: "
                            f"{err.strerror or err}") from None
        if training and rank0:
            after(path)

    save._slim_pruner, save._slim_original = owner, original
    model.save = save
