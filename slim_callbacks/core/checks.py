"""Argument checks shared by every layer: one rule per kind of value.

Each check returns the value normalized (``int``/``float``) or raises
:class:`~slim_callbacks.core.errors.ConfigError` naming the key, the value and what
is allowed. ``bool`` is never a number here; numpy integers and floats are.

Examples:
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


MAX_INT = 2 ** 31 - 1   # what Paddle, numpy's seeding and C ints all take


def check_int(key: str, value, minimum: Optional[int] = None, allowed: Optional[str] = None,
              maximum: int = MAX_INT) -> int:
    """An integer ``>= minimum`` and ``<= maximum`` (by default :data:`MAX_INT`: a larger
    one would fail later as an OverflowError or TypeError deep in Paddle or numpy).

    >>> check_int("batches", 10 ** 6, 0, maximum=128)
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: batches: 1000000 is not allowed; expected an integer in [0, 128]
    >>> check_int("train.seed", 2 ** 64, 0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: train.seed: 18446744073709551616 ... an integer >= 0, at most 2147483647
    """
    if is_int(value) and (minimum is None or value >= minimum) and value <= maximum:
        return int(value)
    if maximum == MAX_INT:
        text = allowed or ("an integer" if minimum is None else f"an integer >= {minimum}")
        raise ConfigError(key, value, f"{text}, at most {maximum}" if is_int(value) and value > maximum
                          else text)
    raise ConfigError(key, value, allowed or (f"an integer <= {maximum}" if minimum is None
                                              else f"an integer in [{minimum}, {maximum}]"))


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
