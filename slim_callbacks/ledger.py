"""The pruning ledger: what a pruned checkpoint needs to be rebuilt and resumed.

Every checkpoint ``<prefix>.pdparams`` written while a :class:`PruneCallback` is active
gets ``<prefix>.pruning.json`` beside it:

- ``fingerprint``: sha256 of the ORIGINAL network's state-dict names and shapes, so a
  ledger is never replayed on another architecture;
- ``plan``: the cumulative :class:`PruningPlan` (kept indices per parameter, relative
  to the original shapes), replayable in one step;
- ``history``: one entry per pruning event (epoch, target ratio, groups, MACs/params
  before and after, the event's own plan);
- ``cursor``: the last finished epoch and the schedule's events (done and remaining);
- ``original_widths``, ``input_shape``, ``criterion``;
- ``param_names``: structural state-dict key -> Paddle tensor name at save time, so the
  ``.pdopt`` (keyed by names such as ``conv2d_0.w_0_velocity_0``) can be loaded into a
  network whose auto-generated names differ (one built later in the same process).

Rebuild a pruned model from a fresh original network:

    >>> net = load_pruned(MyNet(), "checkpoints/final")      # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Mapping, Optional

import paddle

from slim_callbacks.errors import SlimError
from slim_callbacks.plan import PruningPlan
from slim_callbacks.tracing import unwrap

FORMAT = "slim_callbacks.ledger/1"
SUFFIX = ".pruning.json"


def fingerprint(network: paddle.nn.Layer) -> str:
    """sha256 over the state dict's names and shapes, in order."""
    items = [f"{name}:{list(t.shape)}" for name, t in unwrap(network).state_dict().items()]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def ledger_path(prefix: str) -> str:
    return prefix + SUFFIX


def save_ledger(prefix: str, ledger: dict) -> str:
    """Writes ``<prefix>.pruning.json`` atomically (temp file + rename); returns the path."""
    path = ledger_path(prefix)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(dict(ledger, format=FORMAT), f)
    os.replace(tmp, path)
    return path


def load_ledger(prefix: str) -> dict:
    """Reads ``<prefix>.pruning.json`` (``prefix`` may also be the .json path itself)."""
    path = prefix if prefix.endswith(SUFFIX) else ledger_path(prefix)
    if not os.path.exists(path):
        raise SlimError(f"no pruning ledger at {path}: was the checkpoint written by a fit "
                        f"with a PruneCallback?")
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if data.get("format") != FORMAT:
        raise SlimError(f"{path} is not a pruning ledger ({FORMAT})")
    return data


def check_fingerprint(network: paddle.nn.Layer, ledger: dict, where: str = "") -> None:
    """Raises SlimError unless ``network`` is the unpruned architecture of the ledger."""
    if fingerprint(network) != ledger["fingerprint"]:
        raise SlimError(f"the ledger {where}was written for another architecture (or the "
                        f"network is already pruned): build a fresh, unpruned copy of the "
                        f"network that was trained")


def replay(network: paddle.nn.Layer, ledger: dict, optimizer=None) -> PruningPlan:
    """Applies the ledger's cumulative plan to a fresh original ``network`` (and optimizer)."""
    check_fingerprint(network, ledger)
    plan = PruningPlan.from_dict(ledger["plan"])
    shape = ledger.get("input_shape")
    return plan.apply(network, optimizer, input_shape=shape)


def load_pruned(network: paddle.nn.Layer, path: str, optimizer=None,
                load_weights: bool = True) -> paddle.nn.Layer:
    """Rebuilds a pruned model: fresh original network + ledger + weights.

    Args:
        network: a freshly built, UNPRUNED instance of the trained architecture.
        path: checkpoint prefix, e.g. ``"ckpt/final"`` for ``ckpt/final.pruning.json``
            and the weights ``ckpt/final.safetensors`` (preferred: no pickle) or
            ``ckpt/final.pdparams``.
        optimizer: if given, its state is shrunk too and ``<path>.pdopt`` (if it
            exists and ``load_weights``) is loaded into it, re-keyed to this network's
            parameter names.
        load_weights: load ``<path>.safetensors`` or ``.pdparams`` after the replay
            (if one exists).

    Returns:
        ``network``, pruned in place and with the checkpoint's weights.

    Raises:
        SlimError: no ledger, another architecture, or weights that do not match.
    """
    from slim_callbacks.weights import WEIGHT_SUFFIXES, load_state
    ledger = load_ledger(path)
    replay(network, ledger, optimizer)
    weights = next((path + s for s in WEIGHT_SUFFIXES if os.path.exists(path + s)), None)
    if load_weights and weights is not None:
        state = load_state(weights, "path")
        net = unwrap(network)
        own = net.state_dict()
        bad = [k for k, v in state.items() if k in own and list(own[k].shape) != list(v.shape)]
        if bad:
            raise SlimError(f"weights in {weights} do not match the replayed ledger: "
                            f"{bad[:3]}")
        net.set_state_dict(state)
        if optimizer is not None and os.path.exists(path + ".pdopt"):
            optimizer.set_state_dict(rename_optimizer_state(
                paddle.load(path + ".pdopt"), ledger.get("param_names", {}), tensor_names(net)))
    return network


def tensor_names(network: paddle.nn.Layer) -> Dict[str, str]:
    """Structural state-dict key -> Paddle tensor name (``c1.0.weight -> conv2d_0.w_0``)."""
    return {key: t.name for key, t in unwrap(network).state_dict().items()}


def rename_optimizer_state(state: dict, saved: Mapping[str, str], current: Mapping[str, str]) -> dict:
    """Re-keys an optimizer state dict from the saved run's tensor names to ``current``.

    Accumulators are named ``<param name>_<kind>_<n>`` and master weights are keyed by
    the parameter name; both follow the parameter through its structural key.
    """
    rename = {saved[k]: current[k] for k in saved if k in current and saved[k] != current[k]}
    if not rename:
        return dict(state)
    olds = sorted(rename, key=len, reverse=True)

    def new_key(key):
        for old in olds:
            if key == old or key.startswith(old + "_"):
                return rename[old] + key[len(old):]
        return key

    out = {}
    for key, value in state.items():
        if key == "master_weights" and isinstance(value, dict):
            value = {new_key(k): v for k, v in value.items()}
        out[new_key(key)] = value
    return out


def history_epochs(ledger: Optional[dict]) -> list:
    """Epochs of the pruning events recorded in a ledger."""
    return [h["epoch"] for h in (ledger or {}).get("history", [])]
