"""YAML as recipes and ``-o`` values read it: safe, bounded and strict.

:func:`load_yaml` is ``yaml.safe_load`` with three limits a recipe never comes near,
checked on the parsed document *before* any Python object is built:

* nesting depth at most :data:`MAX_DEPTH` (deeper input would end in a RecursionError);
* at most :data:`MAX_NODES` values after alias expansion (``*name`` repeats its anchor:
  nine aliases of nine aliases are 387 million values, an "alias bomb");
* no key twice in one mapping (YAML keeps the later one silently).

Each is one ConfigError/SlimError line naming where and what to do.

Examples:
    >>> load_yaml("a: &x [1, 2]\\nb: *x", "demo")
    {'a': [1, 2], 'b': [1, 2]}
    >>> load_yaml("a: 1\\nb: 2\\na: 3", "demo")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    slim_callbacks.core.errors.ConfigError: a: 'set twice (lines 1 and 3)' ... each key once in demo: delete one of them
"""
from __future__ import annotations

from typing import Any, Dict

import yaml

from slim_callbacks.core.errors import ConfigError

MAX_DEPTH = 64
MAX_NODES = 100_000


class _DepthLimitedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses nesting deeper than :data:`MAX_DEPTH`."""

    where = "YAML"
    _depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(self.where, f"nested deeper than {MAX_DEPTH} levels at line "
                                  f"{mark.line + 1}", f"at most {MAX_DEPTH} levels of nesting")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(text, where: str, key: str = "") -> Any:
    """The Python value of the YAML ``text`` (a string or a text stream).

    ``where`` names the source in errors (``"recipe r.yaml"``, ``"-o train.epochs"``),
    ``key`` the recipe key the text is the value of (for an ``-o`` value).
    Raises ConfigError for input past the limits above and ``yaml.YAMLError`` for
    text that is not YAML.
    """
    loader = _DepthLimitedLoader(text)
    loader.where = where
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node(node, where, key, {})
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_node(node, where: str, path: str, sizes: Dict[int, int]) -> int:
    """The number of values under ``node`` with aliases expanded (each node is visited
    once: an alias reuses the count of its anchor); ConfigError past :data:`MAX_NODES`,
    for a key set twice, or for an anchor that contains itself."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise ConfigError(path or where, "an alias inside its own anchor",
                              f"YAML without self-references in {where}")
        return sizes[key]
    sizes[key] = -1
    count = 1
    if isinstance(node, yaml.MappingNode):
        _check_unique_keys(node, where, path)
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            count += _check_node(key_node, where, path, sizes)
            count += _check_node(value_node, where, f"{path}.{name}" if path else name, sizes)
            _check_count(count, where, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            count += _check_node(item, where, f"{path}.{i}" if path else str(i), sizes)
            _check_count(count, where, path)
    sizes[key] = count
    return count


def _check_count(count: int, where: str, path: str) -> None:
    if count > MAX_NODES:
        raise ConfigError(path or where, f"more than {MAX_NODES:,} values (aliases expanded)",
                          f"at most {MAX_NODES:,} values in {where}: aliases (*name) repeat "
                          f"their anchor's whole value; write the value out instead")


def _check_unique_keys(node: yaml.MappingNode, where: str, path: str) -> None:
    seen: Dict[str, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            full = f"{path}.{key_node.value}" if path else key_node.value
            raise ConfigError(full, f"set twice (lines {seen[key_node.value]} and {line})",
                              f"each key once in {where}: delete one of them")
        seen[key_node.value] = line
