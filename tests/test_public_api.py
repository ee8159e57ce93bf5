"""The public API: a short top level, and the names that left it still working for one
release with a warning that says where they went."""
import importlib

import pytest

import slim_callbacks

PUBLIC = {
    "ConfigError", "SlimError", "PruningSpec", "Pruner", "prune", "PruningPlan", "PruneCallback",
    "DistillCallback", "BNScaleL1", "VisualDLLogger", "Schedule", "make_schedule", "count_flops",
    "profile", "sensitivity", "explain", "STRATEGIES", "resolve_strategy", "Criterion",
    "register_criterion", "register_layer", "register_op", "register_model", "trace", "export",
    "load_pruned", "load_inference_model",
}


def test_the_top_level_is_pinned():
    assert set(slim_callbacks.__all__) == PUBLIC
    assert len(slim_callbacks.__all__) == len(PUBLIC)
    assert all(hasattr(slim_callbacks, name) for name in PUBLIC)


@pytest.mark.parametrize("name", sorted(slim_callbacks.MOVED))
def test_a_moved_name_warns_and_is_the_object_of_its_new_module(name):
    module = slim_callbacks.MOVED[name]
    with pytest.warns(DeprecationWarning, match=f"slim_callbacks.{name} is deprecated.*{module}"):
        value = getattr(slim_callbacks, name)
    assert value is getattr(importlib.import_module(module), name)
    assert name not in slim_callbacks.__all__


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        slim_callbacks.nope
