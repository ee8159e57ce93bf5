"""PruningSpec: one checked description of what, where and how to prune."""
import pytest

from slim_callbacks import ConfigError, PruneCallback, PruningSpec


def test_the_strategy_default_follows_the_target():
    assert PruningSpec(ratios=0.5).strategy == "uniform"
    assert PruningSpec(ratios={"conv*": 0.5}).strategy == "custom"
    assert PruningSpec(target_flops_reduction=0.3).strategy == "uniform"
    assert PruningSpec(target_latency_reduction=0.3).strategy == "latency"


@pytest.mark.parametrize("spec", [
    PruningSpec(ratios=0.4, criterion="fpgm", skip=["fc"], round_to=8),
    PruningSpec(ratios={"conv*": 0.5}, structure={"attention": "heads"}),
    PruningSpec(target_flops_reduction=0.3, strategy="global", strategy_options={"max_ratio": 0.8},
                layers=["conv*"]),
])
def test_to_dict_and_from_dict_round_trip(spec):
    assert PruningSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("fields, message", [
    ({}, r"ratios: None is not allowed; expected a float in \[0, 1\)"),
    ({"ratios": 0.5, "target_latency_reduction": 0.3}, r"ratios: 0.5 .* None when target_latency"),
    ({"target_flops_reduction": 1.0}, r"target_flops_reduction: 1.0 is not allowed"),
    ({"target_latency_reduction": 0.3, "strategy": "uniform"}, r"only strategy latency uses it"),
    ({"ratios": 0.5, "strategy": "latency"}, r"target_latency_reduction: None .*required for strategy latency"),
    ({"ratios": 0.5, "strategy": "custom"}, r"ratios: 0.5 .* dict for strategy custom"),
    ({"ratios": {"a": 0.5}, "strategy": "global"}, r"use strategy custom for per-layer ratios"),
    ({"target_flops_reduction": 0.5, "strategy": "sensitive"}, r"sensitivities'\]: None .* file path"),
    ({"strategy": "sensitive"}, r"target_flops_reduction: None .*required for strategy sensitive"),
    ({"ratios": {"a": 0.5}, "layers": ["a"]}, r"layers: .* None with a \{pattern: ratio\} dict"),
    ({"ratios": 0.5, "strategy_options": {"max_ratio": 0.8}}, r"strategy_options\['max_ratio'\]"),
    ({"ratios": 0.5, "strategy": "global", "strategy_options": "x"}, r"strategy_options: 'x'"),
    ({"ratios": 0.5, "criterion": "l3"}, r"criterion"),
    ({"ratios": 0.5, "round_to": 0}, r"round_to"),
])
def test_each_rule_names_the_argument(fields, message):
    with pytest.raises(ConfigError, match=message):
        PruningSpec(**fields)


def test_from_dict_refuses_an_unknown_key():
    with pytest.raises(ConfigError, match="ratio: 0.5 is not allowed; expected a PruningSpec field"):
        PruningSpec.from_dict({"ratio": 0.5})


def test_from_dict_reads_a_recipe_section_with_its_aids_and_file_at_the_top():
    section = {"target_flops_reduction": 0.3, "strategy": "sensitive", "sensitivities": "s.json",
               "bn_l1": 1e-4, "recalibrate_bn": 2, "distill": {"alpha": 0.3},
               "schedule": {"kind": "agp", "start_epoch": 0, "end_epoch": 4, "frequency": 2}}
    spec = PruningSpec.from_dict(section)
    assert spec.strategy_options == {"sensitivities": "s.json"}
    assert (spec.aids.bn_l1, spec.aids.recalibrate_bn, spec.aids.distill["alpha"]) == (1e-4, 2, 0.3)
    assert spec.schedule.to_dict()["end_epoch"] == 4
    with pytest.raises(ConfigError, match=r"schedule.kind: 'cubic' is not allowed"):
        PruningSpec.from_dict({"ratios": 0.5, "schedule": {"kind": "cubic"}})


def test_the_callback_builds_its_spec_with_the_same_rules():
    callback = PruneCallback(0.3, criterion="fpgm", skip=["fc"])
    assert callback.spec == PruningSpec(ratios=0.3, criterion="fpgm", skip=["fc"])
    with pytest.raises(ConfigError, match="None when target_flops_reduction"):
        PruneCallback(0.3, target_flops_reduction=0.5)
