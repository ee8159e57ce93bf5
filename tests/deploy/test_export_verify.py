"""``export``'s check where Paddle Inference's oneDNN computes a model wrongly."""
import logging
import os

import numpy as np
import paddle.nn as nn
import pytest

from slim_callbacks import SlimError, export
from slim_callbacks.deploy import export as export_module


def test_where_onednn_is_wrong_the_native_kernels_verify_with_a_warning(tmp_path, monkeypatch, caplog):
    real = export_module._paddle_outputs
    monkeypatch.setattr(export_module, "_paddle_outputs",
                        lambda *args: [out + 1 for out in real(*args)])
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.deploy"):
        export(nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU()), str(tmp_path / "ok"), [1, 3, 8, 8])
    assert "deploy it with oneDNN off" in caplog.text
    assert os.path.isfile(tmp_path / "ok" / "model.json")


def test_outputs_off_with_every_kernel_are_still_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "run", lambda pred, batch: [np.zeros([1, 1], "float32")])
    monkeypatch.setattr(export_module, "_paddle_outputs", lambda *args: [np.zeros([1, 1], "float32")])
    with pytest.raises(SlimError, match="export paddle: output 0 has shape"):
        export(nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU()), str(tmp_path / "no"), [1, 3, 8, 8])
    assert not os.path.exists(tmp_path / "no" / "model.json")
