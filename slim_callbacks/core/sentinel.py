"""The one "no value given" sentinel, for keys a mapping or a call leaves out.

``None`` is a value a user may mean (``pruning: null``), so a required key that is
absent is :data:`MISSING` instead; it prints as ``<missing>`` in error messages.

Examples:
    >>> MISSING
    <missing>
    >>> {}.get("kind", MISSING) is MISSING
    True
"""


class _Missing:
    """Marks a required key that is not set."""

    def __repr__(self):
        return "<missing>"


MISSING = _Missing()
