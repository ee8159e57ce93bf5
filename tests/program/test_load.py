"""``load_inference_model``'s check against Paddle Inference where oneDNN cannot be
trusted: a program its passes crash on, and one it computes wrongly."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
import pytest
from helpers import exported

from slim_callbacks import SlimError, load_inference_model
from slim_callbacks.deploy.model_files import onednn_crash
from slim_callbacks.program import load


class ConvLeaky(nn.Layer):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2D(3, 4, 3, padding=1)

    def forward(self, x):
        return F.leaky_relu(self.conv(x), 0.1).mean(axis=[2, 3])


def test_a_program_onednn_crashes_on_is_checked_without_it(tmp_path):
    prefix = exported(ConvLeaky(), [None, 3, 8, 8], tmp_path)
    assert onednn_crash(prefix)  # Paddle 3.3.1's conv + leaky_relu fusion: a segfault
    load_inference_model(prefix)  # the process lives: checked with the native kernels


def test_where_onednn_is_wrong_the_native_kernels_check_the_rebuild(tmp_path, monkeypatch):
    prefix = exported(nn.Sequential(nn.Conv2D(3, 4, 3), nn.ReLU()), [None, 3, 8, 8], tmp_path)
    real_predictor, real_run = load.predictor, load.run
    kinds = []

    def predictor(prefix, threads=1, onednn=True):
        kinds.append(onednn)
        return real_predictor(prefix, threads=threads, onednn=onednn), onednn

    def run(made, batch):  # oneDNN's outputs off by one, as a wrong kernel's would be
        return [out + made[1] for out in real_run(made[0], batch)]

    monkeypatch.setattr(load, "predictor", predictor)
    monkeypatch.setattr(load, "run", run)
    rebuilt = load_inference_model(prefix)
    assert kinds == [True, False]
    x = paddle.randn([1, 3, 8, 8])
    assert np.isfinite(rebuilt(x).numpy()).all()


def test_an_old_format_program_is_refused_with_how_to_export_it_again(tmp_path):
    (tmp_path / "model.pdmodel").write_bytes(b"\\x0a\\x00")
    (tmp_path / "model.pdiparams").write_bytes(b"")
    with pytest.raises(SlimError, match=r"model.pdmodel is an inference program in the old "
                                        r"format .* export the model again with Paddle 3"):
        load_inference_model(str(tmp_path))
