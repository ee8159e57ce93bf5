"""The sensitivity file: settings, base metric, group widths and losses so far.

Owns :class:`Record` (JSON load/save, written atomically after every evaluation), the
checks that a file being resumed fits this run (settings, widths, base metric) and
:func:`load_sensitivities`.
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Optional, Sequence

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.files import write_atomic
from slim_callbacks.tracing.groups import ChannelGroup

FORMAT = "slim_callbacks.analysis.sensitivity/1"
BASE_RTOL = 1e-5  # how close a resumed run's base metric must be to the file's

Sensitivities = Dict[str, Dict[float, float]]


class Record:
    """What a sensitivity file holds: settings, base metric and losses so far."""

    def __init__(self, criterion: str, ratios: List[float], round_to: int):
        self.criterion, self.ratios, self.round_to = criterion, ratios, round_to
        self.base: Optional[float] = None
        self.widths: Dict[str, int] = {}
        self.losses: Dict[str, Dict[float, float]] = {}

    def to_dict(self) -> dict:
        return {
            "format": FORMAT, "criterion": self.criterion, "ratios": self.ratios,
            "round_to": self.round_to, "base": self.base, "widths": self.widths,
            "sensitivities": {name: {repr(r): self.losses[name][r] for r in self.ratios
                                     if r in self.losses[name]}
                              for name in self.network_order() if self.losses.get(name)},
        }

    def network_order(self) -> List[str]:
        """Group names in network order (``widths`` is written in it before any loss),
        so results that arrive out of order from workers are saved in one order."""
        return list(self.widths) + [name for name in self.losses if name not in self.widths]

    def save(self, path: Optional[str]) -> None:
        """Writes the file atomically (:func:`~slim_callbacks.core.files.write_atomic`)."""
        if path is None:
            return
        write_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str) -> "Record":
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            record = cls(str(data["criterion"]), [float(r) for r in data["ratios"]],
                         int(data["round_to"]))
            record.base = None if data["base"] is None else float(data["base"])
            record.widths = {str(k): int(v) for k, v in data["widths"].items()}
            record.losses = {str(name): {float(r): float(v) for r, v in losses.items()}
                             for name, losses in data["sensitivities"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise SlimError(f"{path} is not a sensitivity file: {type(err).__name__}: {err}") from err
        return record

    def check_settings(self, path: str, criterion: str, ratios: List[float], round_to: int) -> None:
        for key, mine, asked in (("criterion", self.criterion, criterion),
                                 ("ratios", self.ratios, ratios), ("round_to", self.round_to, round_to)):
            if mine != asked:
                raise SlimError(f"{path} was made with {key}={mine!r}, this run asks for "
                                f"{key}={asked!r}: pass the same {key}, another file, or "
                                f"delete the file to start over")

    def check_widths(self, path: str, groups: Sequence[ChannelGroup]) -> None:
        for group in groups:
            width = self.widths.get(group.name)
            if width is not None and width != group.num_units:
                raise SlimError(f"{path} has group {group.name} with {width} channels, the "
                                f"network has {group.num_units}: it was made for another network")

    def check_base(self, path: str, base: float) -> None:
        if self.base is not None and not math.isclose(self.base, base, rel_tol=BASE_RTOL, abs_tol=1e-12):
            raise SlimError(f"{path} was made with base metric {self.base!r}, eval_fn now gives "
                            f"{base!r}: the network's weights or the evaluation changed; "
                            f"delete the file to start over")


def load_sensitivities(path: str) -> Sensitivities:
    """``{group: {ratio: loss}}`` from a file written by
    :func:`~slim_callbacks.analysis.sensitivity.sensitivity`."""
    return {name: dict(losses) for name, losses in Record.load(path).losses.items()}
