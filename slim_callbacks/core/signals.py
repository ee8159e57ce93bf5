"""Ctrl-C and SIGTERM around work that must clean up after itself.

:func:`interruptible` turns SIGINT and SIGTERM into ``KeyboardInterrupt`` inside its
block, so ``except``/``finally`` clauses run (by default SIGTERM ends the process at
once, or Paddle's handler does). :func:`deferred` holds them while a C++ call runs (a
``KeyboardInterrupt`` raised inside Paddle's C++ comes out as a ``SystemError``) and
raises ``KeyboardInterrupt`` when the call is over. Outside the main thread, where
Python cannot set handlers, both change nothing; signals already ignored stay ignored.

Examples:
    >>> import os
    >>> with interruptible():
    ...     try:
    ...         with deferred():
    ...             os.kill(os.getpid(), signal.SIGTERM)   # held until the block ends
    ...             print("not interrupted")
    ...     except KeyboardInterrupt as err:
    ...         print("then", err)
    not interrupted
    then SIGTERM
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Sequence

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(signal.Signals(signum).name)


@contextlib.contextmanager
def handled(handler, signums: Sequence[int] = STOP_SIGNALS):
    """Every signal of ``signums`` handled by ``handler`` inside the block, the previous
    handlers after. Signals already ignored stay ignored (``nohup``), and outside the
    main thread, where Python cannot set handlers, nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in signums
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, signal.SIG_DFL if old is None else old)


def interruptible():
    """SIGINT and SIGTERM raise ``KeyboardInterrupt`` inside the block."""
    return handled(_raise_interrupt)


@contextlib.contextmanager
def deferred():
    """SIGINT and SIGTERM inside the block are held; ``KeyboardInterrupt`` after it."""
    received = []
    with handled(lambda signum, frame: received.append(signum)):
        yield
    if received:
        raise KeyboardInterrupt(signal.Signals(received[0]).name)
