"""Paddle's known, repeated messages, kept out of this package's own output.

Filtered by message and only where this package is the caller: the ``slim-callbacks``
command and ``PruneCallback``'s own hooks run inside :func:`quiet_paddle`; a warning
with another message, or the same message raised by the user's own code outside those
calls, is shown as Python would show it.

- :data:`PADDLE_WARNINGS`: Python warnings Paddle 3.x raises on routine calls;
- :data:`OMP_LINES`: what ``import paddle`` prints to stderr when ``OMP_NUM_THREADS``
  is above 1 (``paddle/base/__init__.py``, a plain ``print``, not a warning): dropped
  from the import only when this process is the ``slim-callbacks`` command
  (:func:`import_paddle`).

Examples:
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     with quiet_paddle():
    ...         warnings.warn("When training, we now always track global mean and variance.")
    ...         warnings.warn("a warning of the caller's own")
    >>> [str(w.message) for w in caught]
    ["a warning of the caller's own"]
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
import warnings
from typing import Iterator, Optional, Sequence

#: The command's name (its console script).
COMMAND = "slim-callbacks"

#: Start of each Paddle warning message silenced inside our calls, and where Paddle raises it.
PADDLE_WARNINGS = (
    "When training, we now always track global mean and variance.",  # BatchNorm forward in train mode
    "To copy construct from a tensor",  # paddle.Model.evaluate/fit turning tensor labels into tensors
)

#: Start of each line ``import paddle`` prints to stderr when OMP_NUM_THREADS > 1.
OMP_LINES = ("WARNING: OMP_NUM_THREADS set to ", "PLEASE USE OMP_NUM_THREADS WISELY.")


@contextlib.contextmanager
def quiet_paddle() -> Iterator[None]:
    """Paddle's warnings of :data:`PADDLE_WARNINGS` ignored inside the block; the
    warning filters are put back as they were on the way out."""
    with warnings.catch_warnings():
        for message in PADDLE_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=UserWarning)
        yield


def launched_as_command(argv: Optional[Sequence[str]] = None,
                        orig_argv: Optional[Sequence[str]] = None) -> bool:
    """True when this process is the ``slim-callbacks`` console script or
    ``python -m slim_callbacks``.

    Examples:
        >>> launched_as_command(["/usr/bin/slim-callbacks", "run"], [])
        True
        >>> launched_as_command(["-m"], ["python", "-m", "slim_callbacks", "run"])
        True
        >>> launched_as_command(["train.py"], ["python", "train.py"])
        False
    """
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(argv[0]) == COMMAND:
        return True
    return any(flag == "-m" and module in ("slim_callbacks", "slim_callbacks.app.cli")
               for flag, module in zip(orig_argv, orig_argv[1:]))


@contextlib.contextmanager
def stderr_without(prefixes: Sequence[str]) -> Iterator[None]:
    """Python-level writes to ``sys.stderr`` inside the block are held and written out
    at its end, without the lines that start with one of ``prefixes``.

    Examples:
        >>> import contextlib, io
        >>> seen = io.StringIO()
        >>> with contextlib.redirect_stderr(seen), stderr_without(["noise"]):
        ...     print("noise: dropped", file=sys.stderr)
        ...     print("kept", file=sys.stderr)
        >>> seen.getvalue()
        'kept\\n'
    """
    real, sys.stderr = sys.stderr, io.StringIO()
    try:
        yield
    finally:
        held, sys.stderr = sys.stderr.getvalue(), real
        real.write("".join(line for line in held.splitlines(keepends=True)
                           if not line.startswith(tuple(prefixes))))


def import_paddle() -> None:
    """Imports Paddle for the package: its warning that ccache (for compiling custom
    C++ ops) is missing is silenced for Paddle's module (it says nothing about pruning);
    in the ``slim-callbacks`` command, the OMP_NUM_THREADS lines are dropped too."""
    warnings.filterwarnings("ignore", message="No ccache found", category=UserWarning,
                            module=r"paddle\.utils\.cpp_extension")
    if "paddle" in sys.modules or not launched_as_command():
        importlib.import_module("paddle")
        return
    with stderr_without(OMP_LINES):
        importlib.import_module("paddle")
