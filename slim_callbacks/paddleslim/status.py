"""PaddleSlim's ``Status``: the sensitivity table of a pruner, saved as JSON.

``sensitivies`` (PaddleSlim's spelling; ``sensitivities`` is the same dict) maps a
parameter name to ``{ratio: loss}``. Files are JSON whatever their name. A file that
PaddleSlim wrote is a pickle, and unpickling runs code from the file: it is read only
with ``allow_pickle=True``.

Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "sen.pickle")
    >>> status = Status()
    >>> status.sensitivies["conv2d_0.w_0"] = {0.1: 0.02, 0.2: 0.05}
    >>> status.save(path)
    >>> Status(path).sensitivies
    {'conv2d_0.w_0': {0.1: 0.02, 0.2: 0.05}}
"""
from __future__ import annotations

import io
import json
import logging
import pickle
from typing import Dict, Optional

from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.files import write_atomic

logger = logging.getLogger(__name__)

FORMAT = "slim_callbacks.paddleslim.Status/1"


class _PaddleSlimStatus:
    """Stands in for ``paddleslim...filter_pruner.Status`` while unpickling."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if name == "Status" and module.startswith("paddleslim"):
            return _PaddleSlimStatus
        return super().find_class(module, name)


def _table(data) -> Dict[str, Dict[float, float]]:
    return {str(name): {round(float(r), 6): float(loss) for r, loss in losses.items()}
            for name, losses in dict(data).items()}


class Status:
    """Sensitivities (``{parameter name: {ratio: loss}}``), saved and loaded."""

    def __init__(self, src: Optional[str] = None, allow_pickle: bool = False):
        self.sensitivies: Dict[str, Dict[float, float]] = {}
        self.accumulates: dict = {}
        self.is_ckp = True
        if src is not None:
            self.load(src, allow_pickle=allow_pickle)

    @property
    def sensitivities(self) -> Dict[str, Dict[float, float]]:
        return self.sensitivies

    def save(self, dst: Optional[str]) -> None:
        """Writes the table as JSON (atomically)."""
        if dst is None:
            return
        data = {"format": FORMAT, "is_ckp": self.is_ckp,
                "sensitivities": {name: {repr(r): loss for r, loss in sorted(losses.items())}
                                  for name, losses in self.sensitivies.items()}}
        write_atomic(dst, json.dumps(data, indent=1))

    def load(self, src: str, allow_pickle: bool = False) -> None:
        """Reads a JSON file (or, with ``allow_pickle``, a PaddleSlim pickle)."""
        with open(src, "rb") as f:
            raw = f.read()
        if raw[:1] == b"\x80":  # a pickle's protocol byte
            if not allow_pickle:
                raise SlimError(f"{src} is a pickle (a PaddleSlim sensitivity file): unpickling "
                                f"runs code from the file, so it is read only with "
                                f"allow_pickle=True (Status(src, allow_pickle=True) or the "
                                f"pruner's allow_pickle argument), for a file you trust")
            data = _Unpickler(io.BytesIO(raw)).load()
            self.sensitivies = _table(getattr(data, "sensitivies", {}))
            self.accumulates = dict(getattr(data, "accumulates", {}) or {})
            self.is_ckp = bool(getattr(data, "is_ckp", True))
            return
        try:
            data = json.loads(raw.decode("utf-8"))
            if data.get("format") != FORMAT:
                raise ValueError(f"format is {data.get('format')!r}, expected {FORMAT!r}")
            self.sensitivies = _table(data["sensitivities"])
            self.is_ckp = bool(data.get("is_ckp", True))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise SlimError(f"{src} is not a sensitivity file: {type(err).__name__}: {err}") from err
        logger.info("loaded sensitivities of %d parameters from %s", len(self.sensitivies), src)
