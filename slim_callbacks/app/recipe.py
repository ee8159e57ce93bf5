"""Loading a recipe: read the YAML file (or take a mapping), apply the ``-o`` overrides,
validate against the schema.

The recipe is read with :func:`~slim_callbacks.app.yaml_text.load_yaml` (safe YAML,
bounded in size and depth, no key twice; files up to :data:`MAX_RECIPE_BYTES`), patched by command-line overrides
(``-o train.epochs=3``, see :mod:`slim_callbacks.app.overrides`) and only then
validated (:mod:`slim_callbacks.app.schema`), so :meth:`Recipe.to_dict` is the fully
resolved recipe and loads back to an equal one.

Examples:
    >>> recipe = load_recipe(
    ...     {"name": "demo", "model": {"name": "mobilenet_v1"},
    ...      "data": {"source": "digits"}, "pruning": {"ratios": 0.5}},
    ...     overrides=["train.epochs=3", "pruning.criterion=fpgm"])
    >>> recipe.train.epochs, recipe.pruning.criterion, recipe.input_shape
    (3, 'fpgm', (1, 3, 32, 32))
    >>> recipe.output_dir, recipe.checkpoint.save_dir
    ('output/demo', 'output/demo/checkpoints')
    >>> load_recipe(recipe.to_dict()) == recipe
    True
"""
from __future__ import annotations

import copy
import os
from typing import Any, Dict, Iterable, Mapping, Union

import yaml

from slim_callbacks.app.overrides import apply_override
from slim_callbacks.app.schema import Recipe
from slim_callbacks.app.yaml_text import load_yaml
from slim_callbacks.core.errors import ConfigError, SlimError

MAX_RECIPE_BYTES = 1 << 20


def load_recipe(path_or_dict: Union[str, os.PathLike, Mapping, Recipe],
                overrides: Iterable[str] = ()) -> Recipe:
    """Read, override and validate a recipe.

    Args:
        path_or_dict: a YAML file path, a mapping, or a :class:`Recipe`.
        overrides: ``"a.b.c=value"`` strings applied in order before validation;
            values are parsed as YAML (``3``, ``0.5``, ``true``,
            ``[1, 2]``, ``{a: 1}``). A single string counts as one override.

    Returns:
        The validated :class:`Recipe` with every default resolved.

    Raises:
        ConfigError: an unknown key, a wrong type or an inconsistent combination.
        SlimError: the file is missing or is not valid YAML.

    Examples:
        >>> r = load_recipe({"name": "d", "model": {"name": "mobilenet_v1"},
        ...                  "data": {"source": "digits"}},
        ...                 overrides=["model.kwargs={scale: 0.25}", "train.lr.base=0.05"])
        >>> r.model.kwargs, r.train.lr.base, r.pruning is None
        ({'scale': 0.25}, 0.05, True)
    """
    raw = read_recipe(path_or_dict)
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        apply_override(raw, text)
    return Recipe.from_dict(raw)


def read_recipe(path_or_dict) -> Dict[str, Any]:
    """The raw recipe mapping (a deep copy), not validated yet.

    Examples:
        >>> read_recipe({"name": "x"})
        {'name': 'x'}
    """
    if isinstance(path_or_dict, Recipe):
        return path_or_dict.to_dict()
    if isinstance(path_or_dict, Mapping):
        return copy.deepcopy(dict(path_or_dict))
    if not isinstance(path_or_dict, (str, os.PathLike)):
        raise ConfigError("recipe", path_or_dict, "a YAML file path or a mapping")
    path = os.fspath(path_or_dict)
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(MAX_RECIPE_BYTES + 1)
        if len(text) > MAX_RECIPE_BYTES:
            raise ConfigError("recipe", path, f"a YAML file of at most {MAX_RECIPE_BYTES:,} "
                              f"characters (this one is longer; is it a recipe?)")
        raw = load_yaml(text, f"recipe {path}")
    except FileNotFoundError:
        raise SlimError(f"recipe file not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError("recipe", path, f"a UTF-8 YAML text file (byte {exc.start} is "
                          f"{exc.object[exc.start:exc.start + 1]!r}: binary or another "
                          f"encoding)") from None
    except OSError as exc:
        raise SlimError(f"recipe {path} cannot be read: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise SlimError(f"recipe {path} is not valid YAML: {exc}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError("recipe", raw, f"a mapping of sections at the top of {path}")
    return raw
