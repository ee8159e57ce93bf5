"""The toolkit adapters are optional: without their toolkit they say how to install it."""
import sys

import pytest

from slim_callbacks import SlimError


def test_a_missing_toolkit_is_a_slim_error_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "paddlenlp.trainer", None)  # import fails as if missing
    from slim_callbacks.integrations import paddlenlp
    monkeypatch.setattr(paddlenlp, "_DEFINED", {})
    with pytest.raises(SlimError, match=r"needs paddlenlp .*pip install paddlenlp==2.8.1 --no-deps"):
        paddlenlp.PruneTrainerCallback
    with pytest.raises(AttributeError):
        paddlenlp.Nothing
