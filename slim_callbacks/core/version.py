"""The installed versions: this package's (from its metadata, so ``setup.py`` is the one
place it is written) and Paddle's.

Examples:
    >>> version_line().startswith("slim-callbacks ")
    True
"""
from __future__ import annotations

from importlib import metadata


def package_version(name: str = "slim_callbacks") -> str:
    """The installed version of distribution ``name``, or ``"not installed"``."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # a source tree used without pip install
        return "not installed"


def version_line() -> str:
    """``slim-callbacks X (paddlepaddle Y, Python Z)``: what ``--version`` prints."""
    import platform

    import paddle
    return (f"slim-callbacks {package_version()} (paddle {paddle.__version__}, "
            f"Python {platform.python_version()})")
