"""Criteria score channels as the papers say; selectors pick what PaddleSlim picks."""
import logging

import numpy as np
import paddle.nn as nn
import pytest
from helpers import ConvBN
from hypothesis import given, settings
from hypothesis import strategies as st

from slim_callbacks import ConfigError, prune, register_criterion, trace
from slim_callbacks.engine.criteria import CRITERIA, fpgm, get_criterion, l1_norm, l2_norm
from slim_callbacks.engine.selectors import SELECTORS, keep_count, lowest, optimal_threshold

W = np.array([[1.0, -2.0, 2.0], [0.0, 0.5, 0.0], [3.0, 0.0, -4.0]])


def test_l1_and_l2_norms_per_row():
    np.testing.assert_allclose(l1_norm(W), [5.0, 0.5, 7.0])
    np.testing.assert_allclose(l2_norm(W), [3.0, 0.5, 5.0])


def fpgm_loop(matrix):
    """PaddleSlim's Python loop, the reference for the vectorized version."""
    return np.array([sum(np.linalg.norm(a - b) for b in matrix) for a in matrix])


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 12), st.integers(1, 20), st.integers(0, 10_000))
def test_vectorized_fpgm_equals_the_loop(rows, cols, seed):
    matrix = np.random.default_rng(seed).normal(size=(rows, cols))
    np.testing.assert_allclose(fpgm(matrix), fpgm_loop(matrix), rtol=1e-4, atol=1e-3)


def test_fpgm_prunes_the_filter_nearest_the_geometric_median():
    matrix = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [1.0, 1.0]])
    assert int(np.argmin(fpgm(matrix))) == 3


def test_aliases_and_registry():
    assert get_criterion("geometry_median").name == "fpgm"
    assert get_criterion("bn_scale").name == "slim"
    assert get_criterion("opt_slim").selector == "optimal_threshold"
    assert {"l1_norm", "l2_norm", "fpgm", "slim", "opt_slim"} <= set(CRITERIA)


def test_custom_criterion_is_used_by_prune():
    register_criterion("first_is_best", lambda m: -np.arange(len(m), dtype=float))
    try:
        net = nn.Sequential(nn.Conv2D(3, 6, 1), nn.Conv2D(6, 2, 1))
        plan = prune(net, [1, 3, 2, 2], {"0": 0.5}, criterion="first_is_best")
        assert plan.params[("0", "weight")].kept[0] == [0, 1, 2]
    finally:
        CRITERIA.pop("first_is_best")


def test_a_criterion_object_scores_whole_groups_and_is_registered_as_it_is():
    """A Criterion subclass may score a group any way it likes: here the kept channels
    are the ones whose producer weights have the largest mean (not any norm)."""
    from slim_callbacks.engine.criteria import Criterion

    class LargestMean(Criterion):
        def __call__(self, group, layers, layer_types):
            scores = np.zeros(group.num_units)
            for m in self.members(group, layer_types):
                weight = layers[m.layer]._parameters[m.attr].numpy()
                np.add.at(scores, m.units, np.moveaxis(weight, m.axis, 0).reshape(
                    weight.shape[m.axis], -1).mean(axis=1)[m.indices])
            return scores

    criterion = register_criterion(LargestMean("largest_mean", score=l1_norm))
    try:
        assert get_criterion("largest_mean") is criterion and criterion.needs == "weights"
        net = nn.Sequential(nn.Conv2D(3, 4, 1), nn.Conv2D(4, 2, 1))
        weight = np.array([[-9.0] * 3, [1.0] * 3, [-8.0] * 3, [2.0] * 3]).reshape(4, 3, 1, 1)
        net[0].weight.set_value(weight.astype("float32"))
        plan = prune(net, [1, 3, 2, 2], {"0": 0.5}, criterion="largest_mean")
        assert plan.params[("0", "weight")].kept[0] == [1, 3]   # l1_norm would keep 0 and 2
        with pytest.raises(ConfigError, match="score: .* None when a Criterion object"):
            register_criterion(criterion, l1_norm)
    finally:
        CRITERIA.pop("largest_mean")


def test_each_criterion_declares_what_it_reads():
    assert {name: get_criterion(name).needs for name in ("l1_norm", "fpgm", "slim", "opt_slim", "taylor")} \
        == {"l1_norm": "weights", "fpgm": "weights", "slim": "bn_scales", "opt_slim": "bn_scales",
            "taylor": "gradients"}
    assert get_criterion("slim").source == "bn_scale"   # the older name still reads


def test_custom_selector_callable_is_used_by_prune():
    calls = []

    def keep_the_last(scores, ratio, *, keep, min_keep):
        calls.append((len(scores), ratio, keep, min_keep))
        return np.arange(len(scores) - keep)  # removes the first units, whatever they score

    criterion = register_criterion("keep_the_last", l1_norm, selector=keep_the_last)
    try:
        assert criterion.selector is keep_the_last and criterion.select is keep_the_last
        net = nn.Sequential(nn.Conv2D(3, 6, 1), nn.Conv2D(6, 2, 1))
        plan = prune(net, [1, 3, 2, 2], {"0": 0.5}, criterion="keep_the_last", round_to=2)
        assert calls == [(6, 0.5, 4, 2)]
        assert plan.params[("0", "weight")].kept[0] == [2, 3, 4, 5]
        assert net[0].weight.shape[0] == 4
    finally:
        CRITERIA.pop("keep_the_last")


def test_builtin_selectors_are_callables_on_the_criterion():
    assert get_criterion("l1_norm").select is SELECTORS["lowest"]
    assert get_criterion("opt_slim").select is SELECTORS["optimal_threshold"]


@pytest.mark.parametrize("kwargs, message", [
    ({"score": 3}, "score: 3 is not allowed; expected a callable"),
    ({"score": l1_norm, "source": "grad"}, "source: 'grad' is not allowed; expected one of weight, bn_scale"),
    ({"score": l1_norm, "selector": "top"}, "selector: 'top' is not allowed"),
])
def test_register_criterion_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        register_criterion("x", **kwargs)


def test_a_criterion_sums_over_the_producers_of_a_residual_group():
    class Residual(nn.Layer):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.head = nn.Conv2D(3, 4, 1), nn.Conv2D(3, 4, 1), nn.Conv2D(4, 2, 1)

        def forward(self, x):
            return self.head(self.a(x) + self.b(x))

    net = Residual()
    graph = trace(net, [1, 3, 2, 2])
    group = next(g for g in graph.groups if g.producers == ("a", "b"))
    expected = l1_norm(net.a.weight.numpy().reshape(4, -1)) + l1_norm(net.b.weight.numpy().reshape(4, -1))
    scores = get_criterion("l1_norm")(group, dict(net.named_sublayers()), graph.layer_types)
    np.testing.assert_allclose(scores, expected, rtol=1e-6)


def test_slim_scores_are_the_batch_norm_scales():
    net = nn.Sequential(ConvBN(3, 4), nn.Conv2D(4, 2, 1))
    net[0][1].weight.set_value(np.array([0.5, -2.0, 0.1, 1.0], dtype="float32"))
    graph = trace(net, [1, 3, 4, 4])
    group = next(g for g in graph.groups if g.name == "0.0")
    scores = get_criterion("slim")(group, dict(net.named_sublayers()), graph.layer_types)
    np.testing.assert_allclose(scores, [0.5, 2.0, 0.1, 1.0])


def test_slim_without_batch_norm_falls_back_to_l1_with_a_warning(caplog):
    net = nn.Sequential(nn.Conv2D(3, 4, 1), nn.Conv2D(4, 2, 1))
    graph = trace(net, [1, 3, 2, 2])
    group = graph.groups[0]
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.engine.criteria"):
        scores = get_criterion("slim")(group, dict(net.named_sublayers()), graph.layer_types)
    np.testing.assert_allclose(scores, l1_norm(net[0].weight.numpy().reshape(4, -1)), rtol=1e-6)
    assert "has no BatchNorm" in caplog.text and "falls back to l1_norm" in caplog.text


def test_keep_count_follows_paddleslim_rounding_and_keeps_one():
    assert keep_count(64, 0.3125) == 44 and keep_count(1024, 0.3125) == 704
    assert keep_count(3, 0.99) == 1
    assert keep_count(64, 0.3125, round_to=8) == 48
    assert keep_count(40, 0.5, original=64) == 32  # relative to the original width
    assert keep_count(20, 0.5, original=64) == 20  # never grows back


def test_lowest_prunes_the_lowest_scores():
    assert lowest(np.array([3.0, 1.0, 2.0, 0.5]), keep=2).tolist() == [1, 3]


def test_optimal_threshold_follows_the_reference_walk():
    # squares 0.01, 0.04, 1, 4 -> shares 0.0019, 0.0097, 0.204, 1.0
    scores = np.array([2.0, 0.1, 1.0, 0.2])
    assert optimal_threshold(scores, 0.005).tolist() == [1]       # threshold (0.1+0.2)/2
    assert optimal_threshold(scores, 0.1).tolist() == [1, 3]      # threshold (0.2+1)/2
    assert optimal_threshold(scores, 0.0).tolist() == []          # threshold 0
    assert optimal_threshold(scores, 0.999).tolist() == [1, 2, 3]  # keeps the largest


def test_optimal_threshold_prunes_nothing_when_all_scales_are_equal():
    # nothing lies strictly below the midpoint threshold, as in PaddleSlim
    assert optimal_threshold(np.zeros(4), 0.9).tolist() == []
    assert optimal_threshold(np.ones(4), 0.5).tolist() == []
