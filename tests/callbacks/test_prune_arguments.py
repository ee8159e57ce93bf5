"""PruneCallback's arguments: the common ones, the rare ones as keywords, spec=, and the
deprecated aid keywords (a warning naming what to use instead)."""
import inspect

import pytest

from slim_callbacks import ConfigError, PruneCallback, PruningSpec
from slim_callbacks.callbacks.prune_arguments import DEPRECATED
from slim_callbacks.pruning.aids import TrainingAids


def test_the_common_case_needs_about_a_dozen_arguments():
    named = [p for p in inspect.signature(PruneCallback).parameters.values()
             if p.kind != p.VAR_KEYWORD]
    assert len(named) <= 16


def test_a_spec_is_the_same_as_its_fields():
    spec = PruningSpec(0.5, criterion="fpgm", schedule={"kind": "epochs", "epochs": [1, 2]},
                       structure={"attention": "heads"})
    by_fields = PruneCallback(0.5, "fpgm", prune_epochs=[1, 2], structure={"attention": "heads"})
    assert PruneCallback(spec=spec).spec == by_fields.spec == spec


@pytest.mark.parametrize("kwargs, key", [
    (dict(ratios=0.5), "ratios"), (dict(prune_epochs=[1]), "prune_epochs"),
    (dict(fold_bn_shift=True), "fold_bn_shift"), (dict(start_epoch=2), "start_epoch"),
])
def test_with_a_spec_no_field_is_a_keyword(kwargs, key):
    with pytest.raises(ConfigError, match=rf"^{key}: .*its default when spec= is given"):
        PruneCallback(spec=PruningSpec(0.3), **kwargs)


def test_an_unknown_keyword_is_a_config_error():
    with pytest.raises(ConfigError, match=r"ratio: 0.5 .*an argument of PruneCallback: ratios"):
        PruneCallback(ratio=0.5)


@pytest.mark.parametrize("key, value", [
    ("distill", True), ("recalibrate_bn", 2), ("max_metric_drop", 0.1), ("bn_l1", 1e-4),
    ("log_dir", "logs"), ("log_freq", 5)])
def test_each_deprecated_keyword_warns_with_what_to_use_instead(key, value):
    replacement = DEPRECATED[key].split("(")[0]
    with pytest.deprecated_call(match=rf"PruneCallback\({key}=\.\.\.\) is deprecated; put "
                                      rf"{replacement}\("):
        PruneCallback(0.5, "slim", **{key: value})


def test_the_deprecated_keywords_switch_the_aids_on_in_the_spec():
    with pytest.deprecated_call():
        cb = PruneCallback(0.5, max_metric_drop=0.1, budget_metric="acc", budget_min_step=0.1)
    assert cb.spec.aids == TrainingAids(max_metric_drop=0.1, budget_metric="acc", budget_min_step=0.1)
    assert cb.budget.max_drop == 0.1 and cb.budget.metric == "acc"
