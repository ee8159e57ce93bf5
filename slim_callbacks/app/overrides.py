"""Command-line overrides of a raw recipe: ``-o section.key=value``.

:func:`parse_override` splits the text and parses the value as YAML;
:func:`apply_override` walks the schema (:class:`~slim_callbacks.app.schema.Recipe` and
its sections) down to the key, refusing unknown keys and empty section resets, and sets
the value in the raw mapping before it is validated.

Examples:
    >>> raw = {"name": "d"}
    >>> apply_override(raw, "pruning.ratios.features.0.conv=0.3")
    >>> raw
    {'name': 'd', 'pruning': {'ratios': {'features.0.conv': 0.3}}}
"""
from __future__ import annotations

from dataclasses import fields
from typing import Any, Dict, Optional, Tuple

import yaml

from slim_callbacks.app.rules import Rule, unknown_key_help
from slim_callbacks.app.schema import Recipe
from slim_callbacks.app.yaml_text import load_yaml
from slim_callbacks.core.errors import ConfigError


def parse_override(text: str) -> Tuple[str, Any]:
    """Split ``"a.b=value"`` into the key path and the YAML-parsed value.

    Examples:
        >>> parse_override("train.epochs=3"), parse_override("input_shape=[1, 3, 32, 32]")
        (('train.epochs', 3), ('input_shape', [1, 3, 32, 32]))
    """
    usage = "'section.key=value', e.g. 'train.epochs=3'"
    if not isinstance(text, str):
        raise ConfigError("override", text, usage)
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError("override", text, usage)
    try:
        return key, load_yaml(value_text, f"-o {key}", key)
    except yaml.YAMLError:
        raise ConfigError(key, value_text, "a YAML value, e.g. 3, 0.5, true, [1, 2], {a: 1}") \
            from None


def apply_override(raw: Dict[str, Any], text: str) -> None:
    """Set one ``"a.b.c=value"`` override in the raw recipe mapping, in place.

    The key path must exist in the schema down to a free-form mapping
    (``model.kwargs``, ``pruning.ratios``, ``pruning.schedule``), inside which any
    key may be set. Keys of ``pruning.ratios`` are sublayer patterns and may contain
    dots: ``pruning.ratios.features.0.conv=0.3``.

    Examples:
        >>> raw = {"train": {"epochs": 5}}
        >>> apply_override(raw, "train.optimizer.name=adam")
        >>> raw
        {'train': {'epochs': 5, 'optimizer': {'name': 'adam'}}}
    """
    key, value = parse_override(text)
    parts = key.split(".")
    node, section = raw, Recipe
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth + 1])
        rule = _field_rule(section, part)
        if rule is None:
            raise ConfigError(here, value, unknown_key_help(section))
        rest = parts[depth + 1:]
        if not rest:
            _check_section_override(rule, here, value, text)
            node[part] = value
            return
        if rule.section is None and rule.mapping is None:
            raise ConfigError(key, value, f"a key path ending at {here} (it holds a value)")
        node = _child_mapping(node, part, here, key)
        if rule.mapping is not None:
            _set_free_form(node, rest, value, here, key, flat=rule.mapping == "flat")
            return
        section = rule.section


def _check_section_override(rule: Rule, key: str, value, text: str) -> None:
    """``-o train=`` (or ``train=null``, ``train={}``) would silently reset a whole
    section to its defaults: an error. ``-o pruning=null`` (no pruning) stays allowed."""
    if rule.section is None:
        return
    empty = not text.partition("=")[2].strip()
    if empty or value == {} or (value is None and not rule.optional):
        raise ConfigError(key, "" if empty else value,
                          f"{rule.allowed}, not empty; set keys with -o {key}.KEY=VALUE "
                          "(an empty override would reset the section to its defaults)")


def _field_rule(section: type, name: str) -> Optional[Rule]:
    for f in fields(section):
        if f.name == name:
            return f.metadata["rule"]
    return None


def _child_mapping(node: Dict[str, Any], part: str, here: str, key: str) -> Dict[str, Any]:
    child = node.get(part)
    if child is None:
        child = node[part] = {}
    if not isinstance(child, dict):
        raise ConfigError(here, child, f"a mapping (to set {key} inside it)")
    return child


def _set_free_form(node, rest, value, here, key, *, flat):
    if flat:
        node[".".join(rest)] = value
        return
    for depth, part in enumerate(rest[:-1]):
        node = _child_mapping(node, part, ".".join([here, *rest[:depth + 1]]), key)
    node[rest[-1]] = value
