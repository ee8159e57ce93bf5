"""Which structures a unit of pruning spans: heads or head dims, groups or channels.

Some layers can lose channels in more than one shape. An attention block can lose
whole heads (``num_heads`` shrinks) or the same head-dim positions in every head
(``head_dim`` shrinks); a grouped conv can lose whole groups (``groups`` shrinks) or
channels inside every group (each group keeps the same width). :class:`Structure`
says which; :func:`~slim_callbacks.tracing.tracer.trace` reads it, so it reaches the
tracer's rules as ``tracer.structure``.

Examples:
    >>> check_structure({"attention": "heads"})
    Structure(attention='heads', grouped_conv='positions')
    >>> check_structure(None) == Structure()
    True
    >>> try:
    ...     check_structure({"attention": "all"})
    ... except ConfigError as err:
    ...     print(err)
    structure.attention: 'all' is not allowed; expected one of 'head_dim', 'heads'
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Union

from slim_callbacks.core.errors import ConfigError

#: allowed values of each field, the default first
CHOICES = {
    "attention": ("head_dim", "heads"),
    "grouped_conv": ("positions", "channels", "groups"),
}


@dataclasses.dataclass(frozen=True)
class Structure:
    """What one unit of pruning removes where a layer allows several shapes.

    Attributes:
        attention: ``head_dim``: the same head-dim positions of every head (q, k and v
            together); ``heads``: whole heads.
        grouped_conv: ``positions``: the same position of every group;
            ``channels``: the same number of channels from every group, each group
            its own by score; ``groups``: whole groups (``groups`` shrinks). Where a
            conv's channels are coupled so that its choice cannot hold, it falls
            back to ``positions`` (see :mod:`slim_callbacks.tracing.grouped`).
    """

    attention: str = CHOICES["attention"][0]
    grouped_conv: str = CHOICES["grouped_conv"][0]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _allowed(field: str) -> str:
    return "one of " + ", ".join(repr(c) for c in CHOICES[field])


def check_structure(value: Union[None, Mapping, Structure], key: str = "structure") -> Structure:
    """``value`` (None, a dict of fields or a :class:`Structure`) as a checked Structure.

    Raises:
        ConfigError: naming ``key.field`` for an unknown field or value.
    """
    if value is None:
        return Structure()
    if isinstance(value, Structure):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(key, value, "a dict with the keys " + ", ".join(CHOICES))
    for field, choice in value.items():
        if field not in CHOICES:
            raise ConfigError(f"{key}.{field}", choice, "a key of " + ", ".join(CHOICES))
        if choice not in CHOICES[field]:
            raise ConfigError(f"{key}.{field}", choice, _allowed(field))
    return Structure(**dict(value))

