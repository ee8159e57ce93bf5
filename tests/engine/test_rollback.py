"""A failed verification puts every tensor back bit for bit while keeping only the
removed parts (not a second copy of the network)."""
import numpy as np
import paddle
import pytest
from helpers import same, snapshot, train_steps
from paddle import nn

from slim_callbacks import prune
from slim_callbacks.core.errors import SlimError
from slim_callbacks.engine.surgery import Blocks, Removal, take

SHAPE = [2, 3, 8, 8]


@pytest.mark.parametrize("seed", range(4))
def test_removal_restores_any_cut_from_the_kept_part(seed):
    rng = np.random.default_rng(seed)
    shape = [int(n) for n in rng.integers(2, 6, size=4)]
    array = rng.normal(size=shape).astype("float32")
    axes = sorted(rng.choice(4, size=int(rng.integers(1, 4)), replace=False).tolist())
    kept = {int(a): rng.permutation(shape[a])[:int(rng.integers(1, shape[a]))] for a in axes}
    tensor = paddle.to_tensor(array)
    removal = Removal.cut(tensor, kept)
    assert np.array_equal(tensor.numpy(), take(array, kept))
    assert sum(p.size for p in removal.parts) == array.size - take(array, kept).size
    removal.restore()
    assert np.array_equal(tensor.numpy(), array)


def test_a_cut_with_blocks_keeps_a_whole_copy_and_restores_it():
    array = np.arange(16.0, dtype="float32").reshape(4, 4)
    tensor = paddle.to_tensor(array)
    kept = {1: Blocks(0, np.array([[0, 1], [2, 3]]))}
    removal = Removal.cut(tensor, kept)
    assert np.array_equal(tensor.numpy(), take(array, kept))
    removal.restore()
    assert np.array_equal(tensor.numpy(), array)


class FailsWhenPruned(nn.Layer):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2D(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2D(8)
        self.b = nn.Conv2D(8, 8, 3, padding=1)
        self.c = nn.Conv2D(8, 4, 1)

    def forward(self, x):
        y = self.b(nn.functional.relu(self.bn(self.a(x))))
        if y.shape[1] != 8 and not self.training:
            raise RuntimeError("refuses fewer channels")
        return self.c(y).mean(axis=[2, 3])


def test_a_failed_prune_puts_weights_and_optimizer_state_back_bit_for_bit():
    paddle.seed(0)
    net = FailsWhenPruned()
    optimizer = paddle.optimizer.Momentum(0.1, parameters=net.parameters())
    train_steps(net, optimizer, paddle.randn(SHAPE), paddle.arange(2), 2)
    before = snapshot(net, optimizer)
    with pytest.raises(SlimError, match="pruned network failed a forward pass in eval mode"):
        prune(net, SHAPE, 0.5, optimizer=optimizer)
    assert same(snapshot(net, optimizer), before)
