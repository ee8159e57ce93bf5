"""Adapters for the training loops of Paddle's toolkits (optional extras): each module
imports its toolkit when it is imported, and says how to install it if it is missing.

- :mod:`slim_callbacks.integrations.paddlenlp`: a ``TrainerCallback`` for PaddleNLP's
  ``Trainer`` (``pip install paddlenlp==2.8.1 --no-deps`` and
  ``pip install "slim_callbacks[paddlenlp]"``, the few modules its code imports: its
  own pins fight Paddle 3).
- :mod:`slim_callbacks.integrations.ppdet`: a ``Callback`` for PaddleDetection's
  ``Trainer`` (``pip install paddledet==2.6.0 --no-deps`` and
  ``pip install "slim_callbacks[ppdet]"``, the modules its code imports).
"""
from __future__ import annotations

import importlib

from slim_callbacks.core.errors import SlimError

INSTALL = {"paddlenlp": 'pip install paddlenlp==2.8.1 --no-deps && pip install '
                        '"slim_callbacks[paddlenlp]"',
           "ppdet": 'pip install paddledet==2.6.0 --no-deps && pip install "slim_callbacks[ppdet]"'}


def require(module: str, toolkit: str):
    """``module`` imported, or a SlimError saying how to install ``toolkit``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise SlimError(f"slim_callbacks.integrations.{toolkit} needs {toolkit} ({err}): "
                        f"{INSTALL[toolkit]}") from None
