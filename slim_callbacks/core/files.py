"""Files written so that a failure never leaves a half-written one.

Example:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.json")
    >>> write_atomic(path, '{"ok": true}')
    >>> open(path).read()
    '{"ok": true}'
"""
from __future__ import annotations

import contextlib
import os

from slim_callbacks.core.errors import SlimError


def write_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` via a temp file + ``os.replace``: the old file stays
    whole on failure and no ``*.tmp`` is left behind. SlimError names the file."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise SlimError(f"could not write {path}: {err.strerror or err} (a writable "
                        f"directory with free space is needed)") from None
