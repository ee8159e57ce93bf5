"""A failure inside a rule registered by the user (``register_op``/``register_layer``),
reported as that rule's failure rather than as the network rejecting its input.

Examples:
    >>> with registered_rule(True, "the rule register_op('sinh', f)", "block.0"):  # doctest: +ELLIPSIS
    ...     raise KeyError("axis")
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.SlimError: the rule register_op('sinh', f) failed at block.0 (KeyError: 'axis'); ...
"""
from __future__ import annotations

import contextlib

from slim_callbacks.core.errors import SlimError


@contextlib.contextmanager
def registered_rule(registered: bool, what: str, where: str):
    """Inside the block, an exception (other than a SlimError) of a ``registered`` rule
    becomes one SlimError naming ``what`` and ``where``; built-in rules pass through."""
    if not registered:
        yield
        return
    try:
        yield
    except SlimError:
        raise
    except Exception as err:
        raise SlimError(f"{what} failed at {where or 'the network'} ({type(err).__name__}: "
                        f"{err}); fix the rule, or register the op or layer again with "
                        f"another") from err
