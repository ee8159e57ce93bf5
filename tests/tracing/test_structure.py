"""The ``structure`` option: checked before anything changes, and carried by the trace."""
import numpy as np
import paddle
import pytest

from slim_callbacks import PruneCallback, prune, trace
from slim_callbacks.core.errors import ConfigError
from slim_callbacks.tracing.structure import Structure, check_structure


def small_net():
    paddle.seed(0)
    return paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.ReLU(),
                                paddle.nn.Conv2D(8, 4, 1))


@pytest.mark.parametrize("value, message", [
    ("heads", r"structure: 'heads' is not allowed; expected a dict with the keys attention, grouped_conv"),
    ({"attention": "all"}, r"structure\.attention: 'all' .* one of 'head_dim', 'heads'"),
    ({"head": "heads"}, r"structure\.head: 'heads' .* a key of attention, grouped_conv"),
])
def test_a_bad_structure_names_the_field_and_changes_nothing(value, message):
    net = small_net()
    weights = [p.numpy().copy() for p in net.parameters()]
    with pytest.raises(ConfigError, match=message):
        prune(net, [1, 3, 8, 8], 0.5, structure=value)
    with pytest.raises(ConfigError, match=message):
        PruneCallback(0.5, structure=value)
    assert all(np.array_equal(w, p.numpy()) for w, p in zip(weights, net.parameters()))


def test_the_trace_keeps_the_structure_it_was_made_with():
    graph = trace(small_net(), [1, 3, 8, 8], {"attention": "heads"})
    assert graph.structure == Structure(attention="heads")
    assert trace(small_net(), [1, 3, 8, 8]).structure == Structure()
    assert check_structure(Structure(attention="heads")) == graph.structure


def test_strategies_trace_with_the_structure_the_prune_will_use(monkeypatch):
    """Ratios found on head-dim units would not be the ones a heads-mode prune reaches."""
    from slim_callbacks.analysis import strategies
    seen = []
    original = strategies.trace

    def recording(network, input_shape, structure=None):
        graph = original(network, input_shape, structure)
        seen.append(graph.structure)
        return graph

    monkeypatch.setattr(strategies, "trace", recording)
    strategies.resolve_strategy("uniform", small_net(), [1, 3, 8, 8], ratios=0.5,
                                structure={"attention": "heads"})
    assert seen == [Structure(attention="heads")]


def test_the_callbacks_pruner_traces_once_with_its_structure():
    """The callback's Pruner resolves its strategy on the one trace it made, with the
    structure the events will prune."""
    callback = PruneCallback(0.5, structure={"attention": "heads"}, input_shape=[1, 3, 8, 8])
    model = paddle.Model(small_net())
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=model.network.parameters()))
    callback.set_model(model)
    callback.on_train_begin()
    assert callback.pruner.traces == 1
    assert callback.pruner.graph.structure == Structure(attention="heads")
