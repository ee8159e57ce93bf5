"""Files written so that a failure never leaves a half-written one.

Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.json")
    >>> write_atomic(path, '{"ok": true}')
    >>> open(path).read()
    '{"ok": true}'
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Optional

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


def make_writable_dir(directory: str, what: str, hint: str) -> None:
    """Creates ``directory`` (and its parents) and writes a probe file in it; else one
    SlimError line: ``"<what> <directory> is not writable (<why>); <hint>"``, where *why*
    names a dangling symlink or a regular file on the way rather than "File exists".

    Examples:
        >>> d = tempfile.mkdtemp(); open(os.path.join(d, "f"), "w").close()
        >>> make_writable_dir(os.path.join(d, "f", "out"), "--out", "choose another")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        slim_callbacks.core.errors.SlimError: --out ... (... is a regular file, not a directory); choose another
    """
    blocker = _blocking_part(directory)
    if blocker is not None:
        raise SlimError(f"{what} {directory} is not writable ({blocker}); {hint}")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise SlimError(f"{what} {directory} is not writable ({err.strerror or err}); "
                        f"{hint}") from None


def _blocking_part(path: str) -> Optional[str]:
    """Why ``path`` cannot be a directory: its first part that is a symlink to nothing or
    a regular file; None if there is none."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for i in range(2, len(parts) + 1):
        head = os.sep.join(parts[:i])
        if os.path.islink(head) and not os.path.exists(head):
            return f"{head} is a symlink to {os.readlink(head)}, which does not exist"
        if os.path.exists(head) and not os.path.isdir(head):
            return f"{head} is a regular file, not a directory"
        if not os.path.exists(head):
            return None
    return None
