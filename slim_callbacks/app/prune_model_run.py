"""The run directory of ``prune-model`` (``--out``), under the same rules as ``run``'s
(:mod:`slim_callbacks.app.run_dir`): it must be new or empty unless the run resumes,
and ``<out>/.lock`` is held while the command works in it.

Besides the pruned model and ``summary.json`` it holds ``checkpoints/``: ``plan.json``
(target, criterion, strategy and structure when the run starts; the ratios and every
pruned parameter's shape added once the network is pruned, so a run stopped before
that, e.g. in the ``sensitive`` strategy's analysis, resumes it), and the newest fine-tune epoch's ``<epoch>.pdparams``
(weights and BatchNorm statistics), ``<epoch>.pdopt`` (optimizer state, keyed by
parameter path so another process can load it) and ``<epoch>.json`` (the losses so far,
written last: an epoch counts once its ``.json`` is there). ``resume=True`` prunes to the
saved ratios, loads the newest epoch and goes on: the result equals an uninterrupted run.

Examples:
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> check_out(out, resume=False) == out
    True
    >>> PruneRun(out).latest()
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import paddle

from slim_callbacks.app.run_dir import check_fresh_dirs
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.files import write_atomic

CHECKPOINTS = "checkpoints"
PLAN = "plan.json"
SUMMARY = "summary.json"
ELSEWHERE = "--out DIR"
RESUMED_KEYS = ("target", "criterion", "strategy", "structure")  # what a resumed run must keep


def check_out(out, resume: bool) -> str:
    """``out`` as a string, after checking it can start (or, with ``resume``, continue)
    a run: ConfigError/SlimError before anything is written."""
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise ConfigError("out", out, "a directory for the pruned model")
    out = os.fspath(out)
    if not resume:
        check_fresh_dirs([out], ELSEWHERE)
    elif not os.path.isfile(os.path.join(out, CHECKPOINTS, PLAN)):
        raise ConfigError("out", out, f"a directory holding a prune-model run to resume "
                                      f"(no {CHECKPOINTS}/{PLAN} in it)")
    elif os.path.exists(os.path.join(out, SUMMARY)):
        raise SlimError(f"the run in {out} is finished ({os.path.join(out, SUMMARY)} "
                        f"exists): nothing to resume")
    return out


def widths(network: paddle.nn.Layer) -> Dict[str, List[int]]:
    """Every parameter's and buffer's shape, by its path in ``network``."""
    return {name: list(value.shape) for name, value in network.state_dict().items()}


class PruneRun:
    """The ``checkpoints/`` folder of one ``prune-model`` run in ``out``."""

    def __init__(self, out: str):
        self.dir = os.path.join(os.fspath(out), CHECKPOINTS)

    def file(self, name: str) -> str:
        """The path of ``name`` in the folder, which is created."""
        os.makedirs(self.dir, exist_ok=True)
        return os.path.join(self.dir, name)

    def save_plan(self, plan: Dict[str, Any]) -> None:
        os.makedirs(self.dir, exist_ok=True)
        write_atomic(os.path.join(self.dir, PLAN), json.dumps(plan, indent=1, default=float))

    def load_plan(self, plan: Dict[str, Any]) -> Dict[str, Any]:
        """The saved plan; ConfigError if ``plan`` (this call's) differs in a key the
        resumed run must keep."""
        with open(os.path.join(self.dir, PLAN), encoding="utf-8") as f:
            saved = json.load(f)
        for key in RESUMED_KEYS:
            if plan[key] != saved[key]:
                raise ConfigError(key, plan[key], f"{saved[key]!r}, what the run resumed in "
                                                  f"{os.path.dirname(self.dir)} started with")
        return saved

    def check_widths(self, network: paddle.nn.Layer, saved: Dict[str, Any]) -> None:
        if widths(network) != saved["widths"]:
            raise SlimError(f"pruning to the ratios in {os.path.join(self.dir, PLAN)} no "
                            f"longer gives the saved shapes (was the model changed?): "
                            f"start again in another directory")

    def latest(self) -> Optional[int]:
        """The newest complete epoch, or None."""
        done = [int(n[:-5]) for n in os.listdir(self.dir) if n.endswith(".json")
                and n[:-5].isdigit()] if os.path.isdir(self.dir) else []
        return max(done, default=None)

    def save_epoch(self, epoch: int, network, optimizer, losses: List[float]) -> None:
        """Saves epoch ``epoch`` and then removes the one before."""
        prefix = os.path.join(self.dir, str(epoch))
        paddle.save(network.state_dict(), prefix + ".pdparams")
        paddle.save(_rename(optimizer.state_dict(), _paths(network)), prefix + ".pdopt")
        write_atomic(prefix + ".json", json.dumps({"epoch": epoch, "loss": losses}))
        for suffix in (".json", ".pdparams", ".pdopt"):
            old = os.path.join(self.dir, f"{epoch - 1}{suffix}")
            if os.path.exists(old):
                os.remove(old)

    def restore(self, network, optimizer) -> Tuple[int, List[float]]:
        """Loads the newest epoch into ``network`` and ``optimizer``: ``(epoch, losses)``,
        ``(0, [])`` when no epoch was saved."""
        epoch = self.latest()
        if epoch is None:
            return 0, []
        prefix = os.path.join(self.dir, str(epoch))
        network.set_state_dict(paddle.load(prefix + ".pdparams"))
        names = {path: name for name, path in _paths(network).items()}
        optimizer.set_state_dict(_rename(paddle.load(prefix + ".pdopt"), names))
        with open(prefix + ".json", encoding="utf-8") as f:
            return epoch, json.load(f)["loss"]


def _paths(network) -> Dict[str, str]:
    """Parameter name (this process's) -> path in ``network`` (the same in every process)."""
    return {p.name: path for path, p in network.named_parameters()}


def _rename(state: Dict[str, Any], names: Dict[str, str]) -> Dict[str, Any]:
    """``state`` with each key that starts with a name of ``names`` + "_" renamed."""
    out = {}
    for key, value in state.items():
        base = max((n for n in names if key.startswith(n + "_")), key=len, default=None)
        out[key if base is None else names[base] + key[len(base):]] = value
    return out
