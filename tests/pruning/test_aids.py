"""TrainingAids: the training aids of a PruningSpec, their options and rules."""
import warnings

import pytest

from slim_callbacks import ConfigError, PruningSpec
from slim_callbacks.pruning.aids import TrainingAids


def test_the_defaults_switch_nothing_on():
    assert not TrainingAids().any()
    assert TrainingAids(recalibrate_bn=4).any() and TrainingAids(bn_l1=1e-4).any()


def test_distill_is_normalized_to_its_options():
    assert TrainingAids(distill=True).distill == {"teacher": None, "alpha": 0.5, "temperature": 4.0}
    assert TrainingAids(distill={"alpha": 0.3}).distill["alpha"] == 0.3
    assert TrainingAids(distill=False).distill is None


@pytest.mark.parametrize("aids", [
    TrainingAids(),
    TrainingAids(distill={"temperature": 2.0}, recalibrate_bn=8),
    TrainingAids(max_metric_drop=0.02, budget_metric="acc", budget_min_step=0.1,
                 budget_mode="max", bn_l1=1e-4),
])
def test_to_dict_and_from_dict_round_trip(aids):
    assert TrainingAids.from_dict(aids.to_dict()) == aids


@pytest.mark.parametrize("fields, message", [
    (dict(budget_min_step=0.1), r"budget_min_step: 0.1 .*without max_metric_drop"),
    (dict(budget_metric="acc"), r"budget_metric: 'acc' .*without max_metric_drop"),
    (dict(budget_mode="min"), r"budget_mode: 'min' .*without max_metric_drop"),
    (dict(max_metric_drop=0), r"max_metric_drop: 0 "),
    (dict(max_metric_drop=0.1, budget_mode="up"), r"budget_mode: 'up' .*one of max, min"),
    (dict(bn_l1=0), r"bn_l1: 0 .*a number > 0"),
    (dict(recalibrate_bn=129), r"recalibrate_bn: 129 .*an int in \[0, 128\]"),
    (dict(distill={"beta": 1}), r"distill\['beta'\]: 1 .*teacher, alpha, temperature"),
    (dict(distill={"temperature": 0}), r"distill\['temperature'\]: 0 .*softmax temperature"),
    (dict(distill={"teacher": "t.pdparams"}), r"distill\['teacher'\]: 't.pdparams' .*paddle.nn.Layer"),
])
def test_each_rule_names_the_option(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainingAids(**fields)


def test_from_dict_refuses_an_unknown_key():
    with pytest.raises(ConfigError, match=r"aids.dstill: True .*a TrainingAids field: distill"):
        TrainingAids.from_dict({"dstill": True})


def test_the_spec_holds_the_aids_and_the_schedule():
    spec = PruningSpec(0.5, criterion="slim", schedule={"kind": "epochs", "epochs": [1, 3]},
                       aids={"bn_l1": 1e-4, "max_metric_drop": 0.02})
    assert spec.aids == TrainingAids(bn_l1=1e-4, max_metric_drop=0.02)
    assert spec.schedule.last_epoch == 3
    data = spec.to_dict()
    assert data["schedule"] == {"kind": "epochs", "epochs": [1, 3], "curve": "linear",
                                "initial_ratio": 0.0}
    assert data["aids"]["bn_l1"] == 1e-4
    assert PruningSpec.from_dict(data) == spec


def test_a_ratio_map_schedule_gives_the_final_ratio():
    assert PruningSpec(schedule={1: 0.25, 3: 0.5}).ratios == 0.5
    with pytest.raises(ConfigError, match=r"ratios: 0.4 .*None or 0.5"):
        PruningSpec(0.4, schedule={1: 0.25, 3: 0.5})


def test_the_final_ratio_is_not_below_a_curves_start():
    with pytest.raises(ConfigError, match=r"ratios: 0.2 .*initial_ratio=0.3"):
        PruningSpec(0.2, schedule={"kind": "agp", "start_epoch": 0, "end_epoch": 2,
                                   "initial_ratio": 0.3})


def test_bn_l1_with_a_criterion_that_ignores_bn_scales_warns():
    with pytest.warns(UserWarning, match="ignores BatchNorm scales; use 'slim' or 'opt_slim'"):
        PruningSpec(0.5, criterion="fpgm", aids={"bn_l1": 1e-4})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PruningSpec(0.5, criterion="opt_slim", aids={"bn_l1": 1e-4})
