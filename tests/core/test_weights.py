"""Weight files: .safetensors (safe) and .pdparams (a pickle), for pretrained weights and
load_pruned."""
import os

import numpy as np
import paddle
import paddle.nn as nn
import pytest

from slim_callbacks import ConfigError, PruneCallback, load_pruned
from slim_callbacks.core.weights import load_state, save_safetensors

SHAPE = [1, 3, 8, 8]


class Net(nn.Layer):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(self.c1(x), 1), 1))


def test_safetensors_round_trip(tmp_path):
    paddle.seed(0)
    net = Net()
    path = save_safetensors(net, str(tmp_path / "w.safetensors"))
    state = load_state(path)
    assert sorted(state) == sorted(net.state_dict())
    for key, value in net.state_dict().items():
        np.testing.assert_array_equal(state[key].numpy(), value.numpy())


@pytest.mark.parametrize("name", ["w.pt", "w.safetensors", "w.pdparams"])
def test_foreign_files_are_config_errors_naming_the_key(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x00\x01 not weights")
    with pytest.raises(ConfigError, match=r"^model\.pretrained: "):
        load_state(str(path), "model.pretrained")


def test_load_pruned_reads_safetensors_weights(tmp_path):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss())
    data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]), paddle.randint(0, 2, [8, 1])])
    model.fit(data, epochs=1, batch_size=4, verbose=0, save_dir=str(tmp_path),
              callbacks=[PruneCallback(0.5, input_shape=SHAPE)])
    prefix = str(tmp_path / "final")
    save_safetensors(net, prefix + ".safetensors")
    os.remove(prefix + ".pdparams")
    fresh = load_pruned(Net(), prefix)
    x = paddle.randn([2, 3, 8, 8])
    net.eval()
    fresh.eval()
    assert fresh.c1[0].weight.shape == [4, 3, 3, 3]
    np.testing.assert_allclose(fresh(x).numpy(), net(x).numpy(), rtol=1e-5, atol=1e-6)
