"""Progress bars: one rule for when a command shows them.

A bar is a ``tqdm`` bar on stderr, shown when ``progress`` is True, or when it is None
and stderr is a terminal (so logs and pipes get no bar); ``-q``/``--quiet`` passes False.

Examples:
    >>> with progress_bar(False, total=2, desc="demo") as bar:
    ...     bar.update(2)
    ...     bar.disable
    True
"""
from __future__ import annotations

import sys
from typing import Optional


def progress_bar(progress: Optional[bool], **options):
    """A ``tqdm`` bar (``options`` as tqdm's: total, desc, unit, initial, ...), disabled
    unless ``progress`` is True, or None on a terminal."""
    from tqdm import tqdm
    show = sys.stderr.isatty() if progress is None else progress
    return tqdm(disable=not show, dynamic_ncols=True, **options)
