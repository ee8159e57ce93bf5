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
- ``original_widths``, ``input_shape`` (the example inputs, any structure, as plain
  data), ``criterion``;
- ``verify``: the modes a replay checks with a forward pass on those inputs when no
  ``forward_fn`` is given (``["eval"]`` when the run called the network through a
  ``forward_fn`` or its train-mode forward needs real targets; None: eval and train);
- ``param_names``: structural state-dict key -> Paddle tensor name at save time, so the
  ``.pdopt`` (keyed by names such as ``conv2d_0.w_0_velocity_0``) can be loaded into a
  network whose auto-generated names differ (one built later in the same process);
- ``epochs``: the total epochs of the fit (a resume must pass the same);
- ``files``: sha256 of the ``.pdparams`` / ``.pdopt`` written with it, so weights of
  another epoch or run beside the ledger are refused;
- ``tensors_sha256``: sha256 of the weights' tensors (:func:`~slim_callbacks.core.weights.state_digest`),
  so a ``<prefix>.safetensors`` copy of the weights is loaded only if it holds them.

The records :class:`Ledger` (with its :class:`Cursor`) and :class:`PruningEvent` (one
``history`` entry) are the format: ``to_dict`` gives exactly the JSON's keys and values.

    >>> event = PruningEvent(epoch=2, target=0.5, groups=3, macs=[100, 60], params=[10, 6],
    ...                      plan={"groups": [], "params": {}})
    >>> PruningEvent.from_dict(event.to_dict()) == event
    True
    >>> Cursor.at(2, [event.to_dict()], {2: {"g": 0.5}, 4: {"g": 0.7}}).to_dict()
    {'epoch': 2, 'done': [2], 'remaining': [4], 'events': [[2, [('g', 0.5)]], [4, [('g', 0.7)]]]}

Rebuild a pruned model from a fresh original network:

    >>> net = load_pruned(MyNet(), "checkpoints/final")      # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import paddle

from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.files import write_atomic
from slim_callbacks.core.paddle_utils import unwrap
from slim_callbacks.core.weights import load_state, state_digest
from slim_callbacks.engine.plan import MODES, PruningPlan
from slim_callbacks.pruning.state import PruningEvent

FORMAT = "slim_callbacks.callbacks.ledger/1"
SUFFIX = ".pruning.json"



# ---------------------------------------------------------------------------- records

def event_targets(targets: Mapping[int, Mapping[str, float]]) -> list:
    """``{epoch: {group: target}}`` as the ledger stores it: ``[[epoch, sorted((group,
    target) pairs)], ...]`` by epoch."""
    return [[e, sorted(t.items())] for e, t in sorted(targets.items())]


@dataclasses.dataclass(frozen=True)
class Cursor:
    """Where the run is: the last finished global ``epoch``, the epochs of the events
    ``done`` and ``remaining``, and every scheduled event (see :func:`event_targets`)."""

    epoch: int
    done: List[int]
    remaining: List[int]
    events: list

    @classmethod
    def at(cls, epoch: int, history: Sequence[Mapping], targets: Mapping[int, Mapping[str, float]]) -> "Cursor":
        """The cursor after global ``epoch`` of a run with these events done and planned."""
        return cls(epoch, [h["epoch"] for h in history],
                   sorted(e for e in targets if e > epoch), event_targets(targets))

    def schedules(self, targets: Mapping[int, Mapping[str, float]]) -> bool:
        """True if ``targets`` are the events this cursor was written with."""
        recorded = [list(e) for e in self.events]
        return recorded == [[e, [list(p) for p in t]] for e, t in event_targets(targets)]

    def to_dict(self) -> Dict[str, Any]:
        return {"epoch": self.epoch, "done": self.done, "remaining": self.remaining,
                "events": self.events}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Cursor":
        return cls(d["epoch"], list(d.get("done", [])), list(d.get("remaining", [])),
                   list(d.get("events", [])))


@dataclasses.dataclass(frozen=True)
class Ledger:
    """The ledger of a checkpoint (the keys of the module docstring, without ``format``
    and ``files``, which :func:`save_ledger` adds). Keys an older ledger lacks read as
    None (``input_shape``, ``criterion``, ``epochs``, ``schedule``, ``budget``) or ``{}``
    (``param_names``)."""

    fingerprint: str
    input_shape: Optional[List[int]]
    criterion: Optional[str]
    original_widths: Dict[str, int]
    param_names: Dict[str, str]
    plan: Dict[str, Any]
    history: List[PruningEvent]
    epochs: Optional[int]
    cursor: Cursor
    schedule: Optional[Dict[str, Any]]
    budget: Optional[Dict[str, Any]] = None  # max_metric_drop's state (callbacks.budget)
    verify: Optional[List[str]] = None  # modes a replay without forward_fn verifies

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object, keys in the order of the fields."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["history"] = [h.to_dict() for h in self.history]
        out["cursor"] = self.cursor.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Ledger":
        """From a dict such as :func:`load_ledger` returns (already checked)."""
        return cls(fingerprint=d["fingerprint"], input_shape=d.get("input_shape"),
                   criterion=d.get("criterion"), original_widths=dict(d["original_widths"]),
                   param_names=dict(d.get("param_names", {})), plan=d["plan"],
                   history=[PruningEvent.from_dict(h) for h in d["history"]],
                   epochs=d.get("epochs"), cursor=Cursor.from_dict(d["cursor"]),
                   schedule=d.get("schedule"), budget=d.get("budget"), verify=d.get("verify"))


def fingerprint(network: paddle.nn.Layer) -> str:
    """sha256 over the state dict's names and shapes, in order."""
    items = [f"{name}:{list(t.shape)}" for name, t in unwrap(network).state_dict().items()]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def ledger_path(prefix: str) -> str:
    return prefix + SUFFIX


WEIGHTS, OPTIMIZER, SAFE = ".pdparams", ".pdopt", ".safetensors"
REQUIRED = {"fingerprint": str, "plan": dict, "history": list, "cursor": dict,
            "original_widths": dict}


def file_digest(path: str) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_digests(prefix: str) -> Dict[str, str]:
    """``{".pdparams": sha256, ".pdopt": sha256}`` of the files that exist."""
    return {ext: file_digest(prefix + ext) for ext in (WEIGHTS, OPTIMIZER)
            if os.path.exists(prefix + ext)}


def save_ledger(prefix: str, ledger: dict) -> str:
    """Writes ``<prefix>.pruning.json`` atomically, with the digests of the checkpoint
    files beside it and of the weights' tensors; returns the path."""
    path = ledger_path(prefix)
    vouched = dict(ledger, format=FORMAT, files=checkpoint_digests(prefix))
    if os.path.exists(prefix + WEIGHTS):
        vouched["tensors_sha256"] = state_digest(load_state(prefix + WEIGHTS, "checkpoint"))
    write_atomic(path, json.dumps(vouched))
    return path


def load_ledger(prefix: str) -> dict:
    """Reads and checks ``<prefix>.pruning.json`` (``prefix`` may also be the .json path)."""
    path = prefix if prefix.endswith(SUFFIX) else ledger_path(prefix)
    if not os.path.exists(path):
        raise SlimError(f"no pruning ledger at {path}: was the checkpoint written by a fit "
                        f"with a PruneCallback?")
    expected = f"a pruning ledger ({FORMAT}) written by a PruneCallback"
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(path, f"unreadable JSON ({err})", expected) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ConfigError(path, type(data).__name__ if not isinstance(data, dict)
                          else f"format {data.get('format')!r}", expected)
    for key, kind in REQUIRED.items():
        if not isinstance(data.get(key), kind):
            raise ConfigError(f"{path}: {key}", data.get(key), f"a {kind.__name__} ({expected})")
    if not isinstance(data["cursor"].get("epoch"), int):
        raise ConfigError(f"{path}: cursor.epoch", data["cursor"].get("epoch"),
                          f"an int ({expected})")
    return data


def weights_file(prefix: str) -> str:
    """``<prefix>.safetensors`` if it exists (no pickle), else ``<prefix>.pdparams``."""
    return prefix + SAFE if os.path.exists(prefix + SAFE) else prefix + WEIGHTS


def check_checkpoint_files(prefix: str, ledger: dict, need_optimizer: bool = True,
                           safetensors: bool = True) -> str:
    """The weights file of checkpoint ``prefix`` to load, checked against its ledger:
    ``<prefix>.safetensors`` if it exists and ``safetensors`` (the caller reads it), else
    ``<prefix>.pdparams``; and ``.pdopt`` if ``need_optimizer``.

    Raises:
        SlimError: a file missing, or not the one the ledger was written with (a
            ``.safetensors`` whose tensors are not those of the ledger's ``.pdparams``).
    """
    weights = weights_file(prefix) if safetensors else prefix + WEIGHTS
    needed = [weights] + ([prefix + OPTIMIZER] if need_optimizer else [])
    recorded = ledger.get("files", {})
    for path in needed:
        ext = path[len(prefix):]
        if not os.path.exists(path):
            raise SlimError(f"{path} is missing: the checkpoint {prefix} is incomplete "
                            f"(its ledger is there, its {ext} is not)")
        if ext == SAFE:
            check_safetensors(prefix, ledger)
        elif ext in recorded and file_digest(path) != recorded[ext]:
            raise SlimError(f"{path} is not the file its ledger {ledger_path(prefix)} was "
                            f"written with (weights of another epoch or run): use a "
                            f"checkpoint whose files were saved together")
    return weights


def check_safetensors(prefix: str, ledger: dict) -> None:
    """SlimError unless ``<prefix>.safetensors`` holds the tensors the ledger vouches for
    (those of the ``.pdparams`` it was written with)."""
    safe, pickled, recorded = prefix + SAFE, prefix + WEIGHTS, ledger.get("tensors_sha256")
    if recorded is None:
        raise SlimError(f"{safe} is not vouched for by {ledger_path(prefix)} (a ledger of an "
                        f"older version: it records only {pickled}): move {safe} away to "
                        f"load {pickled}")
    if state_digest(load_state(safe, "weights")) != recorded:
        raise SlimError(f"{safe} holds other weights than {pickled}, the ones its ledger "
                        f"{ledger_path(prefix)} was written with: delete or move {safe} (or "
                        f"write it again from this checkpoint with save_safetensors)")


def check_fingerprint(network: paddle.nn.Layer, ledger: dict, where: str = "") -> None:
    """Raises SlimError unless ``network`` is the unpruned architecture of the ledger."""
    if fingerprint(network) != ledger["fingerprint"]:
        raise SlimError(f"the ledger {where}was written for another architecture (or the "
                        f"network is already pruned): build a fresh, unpruned copy of the "
                        f"network that was trained")


def replay(network: paddle.nn.Layer, ledger: dict, optimizer=None, forward_fn=None) -> PruningPlan:
    """Applies the ledger's cumulative plan to a fresh original ``network`` (and optimizer),
    then checks it with a forward pass on the ledger's inputs: through ``forward_fn`` in
    eval and train mode if given, else in the modes of the ledger's ``verify``."""
    check_fingerprint(network, ledger)
    plan = PruningPlan.from_dict(ledger["plan"])
    inputs = ledger.get("input_shape")
    if inputs is None:
        return plan.apply(network, optimizer)
    modes = MODES if forward_fn is not None else tuple(ledger.get("verify") or MODES)
    return plan.apply(network, optimizer, example_inputs=as_inputs(inputs, forward_fn), modes=modes)


def load_pruned(network: paddle.nn.Layer, path: str, optimizer=None,
                load_weights: bool = True, forward_fn=None) -> paddle.nn.Layer:
    """Rebuilds a pruned model: fresh original network + ledger + weights.

    Args:
        network: a freshly built, UNPRUNED instance of the trained architecture.
        path: checkpoint prefix, e.g. ``"ckpt/final"`` for ``ckpt/final.pruning.json``
            and the weights ``ckpt/final.safetensors`` (preferred: no pickle; loaded only
            if it holds the tensors the ledger vouches for) or ``ckpt/final.pdparams``.
        optimizer: if given, its state is shrunk too and (with ``load_weights``)
            ``<path>.pdopt`` is loaded into it, re-keyed to this network's parameter names.
        load_weights: load the weights after the replay; ``False`` gives the pruned
            structure with the network's current (e.g. initial) weights.
        forward_fn: how to call the network, to check the replay in train mode too;
            not needed when the ledger says which modes its inputs can check.

    Returns:
        ``network``, pruned in place and with the checkpoint's weights.

    Raises:
        SlimError: no ledger, a damaged ledger, another architecture, a missing
            ``.pdparams`` (or ``.pdopt`` when ``optimizer`` is given), or files that are
            not the ones the ledger was written with (a ``.safetensors`` holding other
            weights among them) - all before the network changes.
    """
    ledger = load_ledger(path)
    weights = None
    if load_weights:
        weights = check_checkpoint_files(path, ledger, need_optimizer=optimizer is not None)
    replay(network, ledger, optimizer, forward_fn)
    if weights is not None:
        state = load_state(weights, "path")
        net = unwrap(network)
        own = net.state_dict()
        bad = [k for k, v in state.items() if k in own and list(own[k].shape) != list(v.shape)]
        if bad:
            raise SlimError(f"weights in {weights} do not match the replayed ledger: "
                            f"{bad[:3]}")
        net.set_state_dict(state)
        if optimizer is not None:
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


def checkpoint_epochs(directory: str) -> list:
    """Epoch numbers of the ``<n>.pruning.json`` ledgers in ``directory``, ascending."""
    if not os.path.isdir(directory):
        return []
    names = (n[:-len(SUFFIX)] for n in os.listdir(directory) if n.endswith(SUFFIX))
    return sorted(int(n) for n in names if n.isdigit())


def latest_checkpoint(directory: str) -> str:
    """The prefix of the newest checkpoint in ``directory`` whose ledger, ``.pdparams``
    and ``.pdopt`` are all there and belong together.

    Raises:
        SlimError: there is none, or a newer one is damaged (naming it and why).
    """
    epochs = checkpoint_epochs(directory)
    if not epochs:
        raise SlimError(f"no checkpoint with a pruning ledger in {directory} to resume from")
    prefix = os.path.join(directory, str(epochs[-1]))
    try:
        check_checkpoint_files(prefix, load_ledger(prefix), safetensors=False)
    except SlimError as err:
        raise SlimError(f"the latest checkpoint {prefix} is not consistent ({err}); delete "
                        f"its files to resume from the one before") from None
    return prefix
