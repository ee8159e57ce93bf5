"""One exception family for every user-facing error of slim_callbacks."""

MAX_REPR = 200


class SlimError(ValueError):
    """A bad argument, config key or network that slim_callbacks refuses.

    Raised before anything is changed: after a ``SlimError`` the network and the
    optimizer are exactly as they were.
    """


class ConfigError(SlimError):
    """A recipe or argument value that is not allowed.

    The message names the key path, the value and what is allowed, e.g.
    ``pruning.criterion: 'l3' is not one of l1_norm, l2_norm, fpgm, slim, opt_slim``.
    """

    def __init__(self, key, value, allowed):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {short_repr(value)} is not allowed; expected {allowed}")


def short_repr(value, limit: int = MAX_REPR) -> str:
    """``repr(value)`` cut to about ``limit`` characters, for error messages: built lazily,
    so a huge value (e.g. a YAML alias bomb) costs no more than a small one.

    Examples:
        >>> short_repr({"a": [1, (2,)]})
        "{'a': [1, (2,)]}"
        >>> short_repr([list(range(1000))] * 1000, limit=30)
        '[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9... (cut)'
    """
    text, size = [], 0
    for token in _repr_tokens(value, limit):
        text.append(token)
        size += len(token)
        if size > limit:
            return "".join(text)[:limit] + "... (cut)"
    return "".join(text)


def _repr_tokens(value, limit: int):
    """The pieces of ``repr(value)`` for plain lists, tuples and dicts, one at a time."""
    kind = type(value)
    if kind not in (list, tuple, dict):
        yield repr(value[:limit + 1] if isinstance(value, (str, bytes)) else value)
        return
    yield "[" if kind is list else "(" if kind is tuple else "{"
    for i, item in enumerate(value.items() if kind is dict else value):
        if i:
            yield ", "
        if kind is dict:
            yield from _repr_tokens(item[0], limit)
            yield ": "
            item = item[1]
        yield from _repr_tokens(item, limit)
    if kind is tuple and len(value) == 1:
        yield ","
    yield "]" if kind is list else ")" if kind is tuple else "}"
