"""A pruning event, its strategy (with the FLOPs model of an attention network) and an
export of the result trace the network once, and decide as separate traces did."""
import copy

import paddle
from helpers import TinyViT, counting_traces, randomize

from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.deploy.export import export
from slim_callbacks.pruning.pruner import Pruner, prune

SHAPE = [1, 3, 16, 16]


def test_an_event_its_strategy_and_an_export_trace_once(monkeypatch, tmp_path):
    paddle.seed(0)
    net = TinyViT(dim=16, heads=2)
    randomize(net)
    reference = copy.deepcopy(net)
    made = counting_traces(monkeypatch)
    pruner = Pruner(net, SHAPE, target_flops_reduction=0.3, strategy="uniform")
    plan = pruner.step(0)
    export(net, str(tmp_path / "out"), SHAPE)
    assert len(made) == pruner.traces == 1
    monkeypatch.undo()
    ratio = uniform_ratio(reference, SHAPE, 0.3)  # its own trace
    assert prune(reference, SHAPE, ratio).params == plan.params
