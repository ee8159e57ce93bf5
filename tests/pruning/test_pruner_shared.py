"""What other parts take from a Pruner: its trace (another pruner, the sensitivity
analysis) - used, not traced again, with the answers of a pruner that traced itself."""
import copy

import paddle
from helpers import ConvBN, counting_traces

from slim_callbacks.analysis.sensitivity import sensitivity
from slim_callbacks.pruning.pruner import Pruner

nn = paddle.nn
SHAPE = [1, 3, 8, 8]


def small_net(seed=0):
    paddle.seed(seed)
    return nn.Sequential(ConvBN(3, 8), ConvBN(8, 16), nn.AdaptiveAvgPool2D(1), nn.Flatten(),
                         nn.Linear(16, 4))


def eval_fn(x):
    def metric(network):
        network.eval()
        with paddle.no_grad():
            return 1.0 / (1.0 + float(network(x).square().mean()))
    return metric


def test_a_pruners_sensitivity_reuses_its_trace_and_answers_as_the_function(monkeypatch):
    net, x = small_net(), paddle.randn([4, 3, 8, 8])
    alone = sensitivity(copy.deepcopy(net), eval_fn(x), SHAPE, ratios=[0.25, 0.5], round_to=2,
                        layers=["1.*"], progress=False)
    made = counting_traces(monkeypatch)
    pruner = Pruner(net, SHAPE, ratios=0.5, layers=["1.*"], round_to=2)
    through = pruner.sensitivity(eval_fn(x), [0.25, 0.5], progress=False)
    pruner.prepare()  # the strategy decides on the same trace
    assert len(made) == pruner.traces == 1
    assert through == alone and list(through) == ["1.0"]


def test_a_pruner_given_another_pruners_graph_traces_nothing_and_decides_the_same(monkeypatch):
    net = small_net()
    reference = copy.deepcopy(net)
    made = counting_traces(monkeypatch)
    first = Pruner(net, SHAPE, target_flops_reduction=0.4).prepare()
    second = Pruner(net, SHAPE, ratios=first.ratios, graph=first.graph)
    plan = second.prune_to(second.prepare().group_ratios)
    assert len(made) == first.traces == 1 and second.traces == 0
    monkeypatch.undo()
    alone = Pruner(reference, SHAPE, target_flops_reduction=0.4)
    assert alone.prune_to(alone.prepare().group_ratios).to_dict() == plan.to_dict()
    assert alone.ratios == first.ratios
