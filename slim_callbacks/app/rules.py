"""The validation rules recipes are made of, and the :class:`Section` they fill.

A :class:`Rule` is the allowed-values text of one key plus a converter that returns the
normalized value or raises :class:`Invalid`; the rule turns that into a
:class:`~slim_callbacks.core.errors.ConfigError` naming the full key path, the value
and the allowed text. The builders (:func:`int_rule`, :func:`float_rule`,
:func:`str_rule`, :func:`choice_rule`, :func:`list_rule`, :func:`optional_rule`,
:func:`section_rule`) make rules; :func:`key_field` and :func:`section_field` attach
them to the fields of a :class:`Section`, a frozen dataclass that validates every field
after ``__init__``. The composite rules (``RATIO``, ``SHAPE``, ``RATIOS`` ...) are the
ones the recipe schema (:mod:`slim_callbacks.app.schema`) uses.

Examples:
    >>> RATIO(0.25, "pruning.ratios")
    0.25
    >>> optional_rule(int_rule(1))(0, "train.epochs")
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: train.epochs: 0 is not allowed; expected null or an int >= 1
    >>> SHAPE([1, 3, 32, 32], "input_shape")
    (1, 3, 32, 32)
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Dict, Iterable, Mapping, Optional, Tuple

from slim_callbacks.core.checks import check_int, check_ratio, is_int, is_real
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.core.sentinel import MISSING

MODEL_NAME_HELP = ("a paddle.vision.models function name (e.g. mobilenet_v1) "
                   "or 'module:callable'")

def join_key(prefix: str, key: Any) -> str:
    """The key path of ``key`` inside ``prefix``.

    Examples:
        >>> join_key("train", "epochs"), join_key("", "name")
        ('train.epochs', 'name')
    """
    return f"{prefix}.{key}" if prefix else str(key)


# --------------------------------------------------------------------------- rules


class Invalid(Exception):
    """Raised by a rule's ``convert`` to say "not allowed" at its own key path."""


@dataclass(frozen=True)
class Rule:
    """How one key is validated: the allowed-values text and a converter.

    ``convert(value, path)`` returns the normalized value or raises ``Invalid``;
    nested rules raise :class:`ConfigError` at their own, deeper, path. ``section``
    names the dataclass of a nested section; ``mapping`` is ``"flat"`` or ``"nested"``
    for free-form dict keys that overrides may reach into.
    """

    allowed: str
    convert: Callable[[Any, str], Any]
    section: Optional[type] = None
    mapping: Optional[str] = None
    optional: bool = False

    def __call__(self, value, path):
        if value is MISSING:
            raise ConfigError(path, value, f"{self.allowed} (required)")
        try:
            return self.convert(value, path)
        except Invalid:
            raise ConfigError(path, value, self.allowed) from None


def optional_rule(rule: Rule) -> Rule:
    def convert(value, path):
        return None if value is None else rule.convert(value, path)
    return dataclasses.replace(rule, allowed=f"null or {rule.allowed}", convert=convert,
                               optional=True)


def int_rule(low: int) -> Rule:
    def convert(value, path):
        if not is_int(value) or value < low:
            raise Invalid
        return check_int(path, value, low, f"an int >= {low}")   # the upper bound
    return Rule(f"an int >= {low}", convert)


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _as_float(value) -> float:
    """``value`` as a finite float; accepts ints and YAML 1.1 strings like ``'3e-5'``."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        value = float(value)
    if not is_real(value) or not math.isfinite(value):
        raise Invalid
    return float(value)


def float_rule(low: float, high: float = math.inf, *, low_open=False,
               high_open=True) -> Rule:
    def convert(value, path):
        number = _as_float(value)
        if number < low or (low_open and number == low):
            raise Invalid
        if number > high or (high_open and number == high):
            raise Invalid
        return number
    if high == math.inf:
        allowed = f"a float {'>' if low_open else '>='} {low:g}"
    else:
        allowed = (f"a float in {'(' if low_open else '['}{low:g}, "
                   f"{high:g}{')' if high_open else ']'}")
    return Rule(allowed, convert)


def checked_rule(check: Callable[[str, Any], Any], allowed: str) -> Rule:
    """A rule that is the API's own argument check (one place per rule):
    ``check(key, value)`` returns the value or raises ``ConfigError``; YAML 1.1 float
    text (``'1e-3'``) is a number first.

    Examples:
        >>> from slim_callbacks.core.checks import check_ratio
        >>> checked_rule(check_ratio, "a ratio")("5e-1", "pruning.ratios")
        0.5
    """
    def convert(value, path):
        return check(path, _yaml_number(value))
    return Rule(allowed, convert)


def spec_rule(check: Callable[[str, Any], Any], allowed: str) -> Rule:
    """A rule whose test is the API's own check (written once, in the spec or its aids)
    and whose text is the recipe's ``allowed``; YAML 1.1 float text is a number first.

    Examples:
        >>> from slim_callbacks.core.checks import check_ratio
        >>> optional_rule(spec_rule(check_ratio, "a float in [0, 1)"))(1, "pruning.ratios")
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.ConfigError: pruning.ratios: 1 is not allowed; expected null or a float in [0, 1)
    """
    def convert(value, path):
        try:
            return check(path, _yaml_number(value))
        except ConfigError:
            raise Invalid from None
    return Rule(allowed, convert)


def _yaml_number(value):
    """YAML 1.1 float text (``'3e-5'``) as a float; anything else as it is."""
    if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
        return float(value)
    return value


def str_rule(allowed: str = "a non-empty string", pattern: Optional[str] = None) -> Rule:
    def convert(value, path):
        if not isinstance(value, str) or not value.strip():
            raise Invalid
        if pattern is not None and not re.fullmatch(pattern, value):
            raise Invalid
        return value
    return Rule(allowed, convert)


def choice_rule(options: Iterable[str]) -> Rule:
    options = tuple(options)

    def convert(value, path):
        if not isinstance(value, str) or value not in options:
            raise Invalid
        return value
    return Rule(f"one of {', '.join(options)}", convert)


def _criterion_convert(value, path):
    """A name :func:`~slim_callbacks.engine.criteria.get_criterion` knows at validation time,
    so criteria added with ``register_criterion`` work in recipes too."""
    from slim_callbacks.engine.criteria import get_criterion
    get_criterion(value, key=path)
    return value


def _strategy_convert(value, path):
    """A name in :data:`slim_callbacks.analysis.strategies.STRATEGIES`, the one registry of
    strategies that recipes, ``PruneCallback`` and ``resolve_strategy`` share."""
    from slim_callbacks.analysis.strategies import STRATEGIES
    if not isinstance(value, str) or value not in STRATEGIES:
        raise ConfigError(path, value, f"one of {', '.join(STRATEGIES)}")
    return value


def _bool_convert(value, path):
    if not isinstance(value, bool):
        raise Invalid
    return value


BOOL = Rule("true or false", _bool_convert)


def list_rule(item: Rule, allowed: str, length: Optional[int] = None) -> Rule:
    def convert(value, path):
        if not isinstance(value, (list, tuple)):
            raise Invalid
        if length is not None and len(value) != length:
            raise Invalid
        return tuple(item(v, f"{path}[{i}]") for i, v in enumerate(value))
    return Rule(allowed, convert)


def _mapping_convert(value, path):
    if not isinstance(value, Mapping):
        raise Invalid
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(join_key(path, key), value[key], "string keys")
    return copy.deepcopy(dict(value))


MAPPING = Rule("a mapping", _mapping_convert, mapping="nested")


def section_rule(cls: type) -> Rule:
    def convert(value, path):
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise Invalid
        return cls.from_dict(value)
    return Rule(f"a mapping with keys {', '.join(cls.keys())}", convert, section=cls)


def key_field(rule: Rule, default: Any = MISSING):
    """A dataclass field validated by ``rule``; ``default`` MISSING means required."""
    return field(default=default, metadata={"rule": rule})


def section_field(cls: type, *, optional: bool = False):
    """A nested section field; absent or null means all its defaults (or None)."""
    rule = section_rule(cls)
    return field(default=None, metadata={"rule": optional_rule(rule) if optional else rule})


# ------------------------------------------------------------------ composite rules

NAME = str_rule("a name of letters, digits, '_', '-', '.' (e.g. mbv1_digits)",
                 r"[A-Za-z0-9][A-Za-z0-9_.-]*")
PATH = str_rule("a non-empty path string")
PATTERNS = list_rule(str_rule("a non-empty glob pattern string"),
                      "a list of glob patterns over sublayer names")


def _non_empty_patterns(value, path):
    patterns = PATTERNS.convert(value, path)
    if not patterns:
        raise Invalid
    return patterns


LAYERS = Rule("a non-empty list of glob patterns over sublayer names ([] matches nothing; "
              "'*' is every layer)", _non_empty_patterns)
RATIO = spec_rule(check_ratio, "a float in [0, 1)")
MODEL_NAME = str_rule(MODEL_NAME_HELP,
                       r"[A-Za-z_]\w*|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
PRETRAINED = str_rule("a path to a .safetensors file (or a .pdparams pickle you trust)",
                       r".+\.(safetensors|pdparams)")
EPOCHS = list_rule(int_rule(1), "a list of epochs (ints >= 1)")
SHAPE = list_rule(int_rule(1), "a list of 4 positive ints [N, C, H, W]", length=4)


def _image_size_convert(value, path):
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise Invalid
        return tuple(int_rule(1)(v, f"{path}[{i}]") for i, v in enumerate(value))
    return int_rule(1).convert(value, path)


IMAGE_SIZE = Rule("an int >= 1 or a list [height, width]", _image_size_convert)


def _ratios_convert(value, path):
    if isinstance(value, Mapping):
        ratios = _mapping_convert(value, path)
        if not ratios:
            raise Invalid
        return {key: RATIO(ratio, join_key(path, key)) for key, ratio in ratios.items()}
    return RATIO.convert(value, path)


RATIOS = Rule("a float in [0, 1) or a non-empty mapping {sublayer pattern: ratio}",
              _ratios_convert, mapping="flat")


def _schedule_convert(value, path):
    schedule = _mapping_convert(value, path)
    kind = schedule.get("kind", MISSING)
    if not isinstance(kind, str) or not kind:
        raise ConfigError(join_key(path, "kind"), kind, "a schedule kind name (string)")
    return schedule


def _round_to_check(key, value):
    from slim_callbacks.latency.auto_round import check_round_to_option
    return check_round_to_option(value)


ROUND_TO = spec_rule(_round_to_check, "an int >= 1 or 'auto' (the multiple measured for this machine)")
CRITERION = Rule("a registered criterion name", _criterion_convert)
STRATEGY = Rule("a registered strategy name", _strategy_convert)
SCHEDULE = Rule("a mapping with a string 'kind' (see slim_callbacks.pruning.schedules)",
                _schedule_convert, mapping="nested")


# ----------------------------------------------------------------------- sections


@dataclass(frozen=True)
class Section:
    """Base of the recipe sections: validates every field after ``__init__``.

    Subclasses set ``prefix`` (their key path) and may override :meth:`_check` for
    cross-field checks and derived defaults.
    """

    prefix: ClassVar[str] = ""

    def __post_init__(self):
        for f in fields(self):
            value = f.metadata["rule"](getattr(self, f.name), join_key(self.prefix, f.name))
            object.__setattr__(self, f.name, value)
        self._check()

    def _check(self) -> None:
        """Cross-field checks; may fill derived defaults with ``_set``."""

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The keys this section accepts, in declaration order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_dict(cls, raw: Mapping):
        """Build the section from a mapping, rejecting unknown keys.

        Examples:
            >>> @dataclass(frozen=True)
            ... class Demo(Section):
            ...     prefix: ClassVar[str] = "demo"
            ...     size: int = key_field(int_rule(1), 32)
            >>> Demo.from_dict({}).size
            32
            >>> Demo.from_dict({"colour": "red"})
            Traceback (most recent call last):
            ...
            slim_callbacks.core.errors.ConfigError: demo.colour: 'red' is not allowed; expected a key of demo: size
        """
        for key, value in raw.items():
            if key not in cls.keys():
                raise ConfigError(join_key(cls.prefix, key), value, unknown_key_help(cls))
        return cls(**raw)

    def to_dict(self) -> Dict[str, Any]:
        """Plain dicts, lists and scalars, ready for ``yaml.safe_dump``."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}


def unknown_key_help(cls: type) -> str:
    """The allowed-keys text of a section, e.g. ``a key of train: epochs, ...``."""
    where = cls.prefix or "the recipe"
    return f"a key of {where}: {', '.join(cls.keys())}"


def _plain(value):
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value

