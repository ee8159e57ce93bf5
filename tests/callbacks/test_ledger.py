"""Replaying a ledger (load_pruned, resume) checks the pruned network with a forward pass
on the ledger's inputs: without the run's forward_fn it checks the modes the ledger says
it can (eval when the train-mode forward needs targets), with it both modes."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest

from slim_callbacks import load_pruned, prune
from slim_callbacks.callbacks.ledger import Cursor, Ledger, fingerprint, save_ledger, tensor_names
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.example_inputs import as_inputs

INPUTS = [{"shape": [2, 3, 8, 8], "dtype": "float32"}, {"shape": [2, 4], "dtype": "int64"}]


class NeedsTargets(nn.Layer):
    """(image, token ids) -> logits; in train mode the loss, which needs targets."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU())
        self.embed = nn.Embedding(10, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, image, ids, targets=None):
        feat = self.conv(image).mean(axis=[2, 3]) + self.embed(ids).mean(axis=1)
        logits = self.fc(feat)
        if not self.training:
            return logits
        if targets is None:
            raise ValueError("train mode needs targets")
        return nn.functional.cross_entropy(logits, targets)


def with_targets(network, inputs):
    if not network.training:
        return network(*inputs)
    return network(*inputs, paddle.zeros([inputs[0].shape[0], 1], "int64"))


def pruned_checkpoint(tmp_path, verify):
    """A pruned NeedsTargets saved at ``<tmp_path>/final`` with its ledger; the network."""
    paddle.seed(0)
    net = NeedsTargets()
    original, widths = fingerprint(net), {"conv.0": 8}
    plan = prune(net, INPUTS, 0.5, forward_fn=with_targets)
    prefix = str(tmp_path / "final")
    paddle.save(net.state_dict(), prefix + ".pdparams")
    save_ledger(prefix, Ledger(
        fingerprint=original, input_shape=as_inputs(INPUTS).to_data(), criterion="l1_norm",
        original_widths=widths, param_names=tensor_names(net), plan=plan.to_dict(), history=[],
        epochs=1, cursor=Cursor.at(0, [], {}), schedule=None, verify=verify).to_dict())
    return net, prefix


def outputs(net):
    net.eval()
    rng = np.random.default_rng(1)
    image = paddle.to_tensor(rng.standard_normal([2, 3, 8, 8]).astype("float32"))
    return net(image, paddle.to_tensor(rng.integers(0, 10, [2, 4]))).numpy()


def test_a_ledger_that_verifies_in_eval_mode_reloads_without_forward_fn(tmp_path):
    net, prefix = pruned_checkpoint(tmp_path, verify=["eval"])
    fresh = load_pruned(NeedsTargets(), prefix)
    assert fresh.conv[0].weight.shape == net.conv[0].weight.shape != [8, 3, 3, 3]
    np.testing.assert_array_equal(outputs(fresh), outputs(net))


def test_a_ledger_that_verifies_both_modes_needs_the_forward_fn(tmp_path):
    net, prefix = pruned_checkpoint(tmp_path, verify=None)
    fresh = NeedsTargets()
    with pytest.raises(SlimError, match="train mode.*train mode needs targets.*forward_fn="):
        load_pruned(fresh, prefix)
    assert fresh.conv[0].weight.shape == [8, 3, 3, 3]  # nothing changed
    load_pruned(fresh, prefix, forward_fn=with_targets)
    np.testing.assert_array_equal(outputs(fresh), outputs(net))


def test_the_eval_forward_still_catches_a_plan_that_does_not_fit(tmp_path, monkeypatch):
    _, prefix = pruned_checkpoint(tmp_path, verify=["eval"])
    monkeypatch.setattr(NeedsTargets, "forward", lambda self, image, ids: self.conv(
        image).mean(axis=[2, 3]).reshape([2, 8]))  # code that sizes the pruned channels
    with pytest.raises(SlimError, match="eval mode"):
        load_pruned(NeedsTargets(), prefix)
