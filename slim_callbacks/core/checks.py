"""Argument checks shared by every layer: one rule per kind of value.

Each check returns the value normalized (``int``/``float``) or raises
:class:`~slim_callbacks.core.errors.ConfigError` naming the key, the value and what
is allowed. ``bool`` is never a number here; numpy integers and floats are.

Example:
    >>> import numpy as np
    >>> check_int("round_to", np.int64(8), minimum=1)
    8
    >>> check_ratio("ratios", 0.5)
    0.5
    >>> check_ratio("ratios", 1.0)
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: ratios: 1.0 is not allowed; expected a number in [0, 1)
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable, Optional

import numpy as np

from slim_callbacks.core.errors import ConfigError


def is_int(value) -> bool:
    """An integer that is not a bool (Python or numpy)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """A real number that is not a bool (Python or numpy); NaN included."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_bool(key: str, value) -> bool:
    """``True`` or ``False`` (numpy's too), nothing else: a string such as ``"false"``
    would be truthy.

    >>> check_bool("onednn", np.True_)
    True
    >>> check_bool("onednn", "no")
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: onednn: 'no' is not allowed; expected a bool (true or false)
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ConfigError(key, value, "a bool (true or false)")


def check_int(key: str, value, minimum: Optional[int] = None, allowed: Optional[str] = None,
              maximum: Optional[int] = None) -> int:
    """An integer ``>= minimum`` (and ``<= maximum``).

    >>> check_int("batches", 10 ** 6, 0, maximum=128)
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: batches: 1000000 is not allowed; expected an integer in [0, 128]
    """
    if (not is_int(value) or (minimum is not None and value < minimum)
            or (maximum is not None and value > maximum)):
        default = ("an integer" if minimum is None and maximum is None
                   else f"an integer >= {minimum}" if maximum is None
                   else f"an integer <= {maximum}" if minimum is None
                   else f"an integer in [{minimum}, {maximum}]")
        raise ConfigError(key, value, allowed or default)
    return int(value)


def check_epoch(key: str, value, allow_none: bool = False) -> Optional[int]:
    """A 0-based epoch index: an int >= 0 (or None when allowed)."""
    if value is None and allow_none:
        return None
    return check_int(key, value, 0, "an integer epoch >= 0 (0-based)" + (" or None" if allow_none else ""))


def check_number(key: str, value, low: float = -math.inf, high: float = math.inf, *,
                 low_open: bool = False, high_open: bool = False,
                 allowed: Optional[str] = None) -> float:
    """A real number in the interval given (NaN never is)."""
    ok = is_real(value) and not math.isnan(value)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        if allowed is None:
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            allowed = f"a number in {left}{low:g}, {high:g}{right}"
        raise ConfigError(key, value, allowed)
    return float(value)


def check_ratio(key: str, value) -> float:
    """A pruning ratio: a number in [0, 1)."""
    return check_number(key, value, 0.0, 1.0, high_open=True)


def check_fraction(key: str, value, example: str = "0.5") -> float:
    """A number in (0, 1), e.g. a FLOPs reduction target or a tolerance."""
    return check_number(key, value, 0.0, 1.0, low_open=True, high_open=True,
                        allowed=f"a number in (0, 1), e.g. {example}")


def check_choice(key: str, value, options: Iterable[str]) -> str:
    """One of ``options`` (compared as given)."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(key, value, f"one of {', '.join(options)}")
    return value
