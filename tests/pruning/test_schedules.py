"""Tests of slim_callbacks.pruning.schedules: exact curve values, properties, and every error."""
import dataclasses
import doctest
import logging
import math
import pickle
import re

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slim_callbacks.core.errors import ConfigError
from slim_callbacks.pruning import schedules
from slim_callbacks.pruning.schedule_factory import SCHEDULES, make_schedule, schedule_from_dict
from slim_callbacks.pruning.schedules import (
    AGP,
    AtEpochs,
    ExpRamp,
    LinearRamp,
    OneShot,
    Ramp,
    RatioMap,
    Schedule,
)


def raises(message):
    """pytest.raises(ConfigError) pinned to the start of the exact message."""
    return pytest.raises(ConfigError, match="^" + re.escape(message))


def targets(sched, final=None):
    return [r for _, r in sched.events(final)]


# ----------------------------------------------------------------------- strategies

epoch = st.integers(0, 30)
ratio = st.floats(0.0, 0.5)


@st.composite
def ramps(draw):
    cls = draw(st.sampled_from([AGP, LinearRamp, ExpRamp]))
    start, freq, steps = draw(epoch), draw(st.integers(1, 4)), draw(st.integers(0, 8))
    return cls(start, start + steps * freq, freq, draw(ratio))


at_epochs = st.builds(
    AtEpochs, st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True).map(sorted),
    st.sampled_from(["linear", "agp", "exp"]), ratio)


@st.composite
def ratio_maps(draw):
    epochs = draw(st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True))
    values = sorted(draw(st.lists(st.floats(0, 1, exclude_max=True), min_size=len(epochs),
                                  max_size=len(epochs))))
    return RatioMap(dict(zip(sorted(epochs), values)))


any_schedule = st.one_of(st.builds(OneShot, epoch), at_epochs, ratio_maps(), ramps())


def final_for(sched, data, min_gap=0.0):
    """A final ratio valid for ``sched`` (RatioMap: None, it fixes its own)."""
    if isinstance(sched, RatioMap):
        return None
    low = getattr(sched, "initial_ratio", 0.0) + min_gap
    return data.draw(st.floats(low, 1, exclude_max=True), label="final_ratio")


# ----------------------------------------------------------------------- exact values

def test_agp_values_by_hand():
    # K = 4 events at 0, 2, 4, 6; s_k = 0.5 * (1 - (1 - k/4)^3)
    assert AGP(0, 6, frequency=2).events(0.5) == [
        (0, 0.5 * 37 / 64), (2, 0.5 * 7 / 8), (4, 0.5 * 63 / 64), (6, 0.5)]


def test_agp_first_event_prunes_and_steps_shrink():
    ratios = targets(AGP(3, 7), 0.8)
    assert ratios[0] > 0.0  # the paper's t0 value (s_i = 0) is not an event
    steps = np.diff([0.0] + ratios)
    assert (steps > 0).all() and (np.diff(steps) < 0).all()  # fast early, slow late


def test_agp_with_initial_ratio_by_hand():
    # s_i = 0.2, s_f = 0.6, K = 2: 0.6 - 0.4 * (1/2)^3 = 0.55, then 0.6
    assert targets(AGP(1, 2, initial_ratio=0.2), 0.6) == pytest.approx([0.55, 0.6])


def test_linear_values_by_hand():
    assert targets(LinearRamp(0, 4, 2, initial_ratio=0.1), 0.7) == pytest.approx([0.3, 0.5, 0.7])
    assert LinearRamp(2, 5).event_epochs == (2, 3, 4, 5)


def test_exp_values_by_hand():
    # 1 - (1/16)^(k/4) = 1/2, 3/4, 7/8, 15/16
    assert targets(ExpRamp(0, 3), 0.9375) == pytest.approx([0.5, 0.75, 0.875, 0.9375])
    # s_i = 0.5, s_f = 0.875, K = 2: 1 - 0.5 * 0.25^(1/2) = 0.75
    assert targets(ExpRamp(4, 8, 4, initial_ratio=0.5), 0.875) == pytest.approx([0.75, 0.875])


def test_at_epochs_follows_the_named_curve():
    events = AtEpochs([2, 4, 6]).events(0.6)
    assert [e for e, _ in events] == [2, 4, 6]
    assert [r for _, r in events] == pytest.approx([0.2, 0.4, 0.6])
    assert targets(AtEpochs([1, 5, 6, 9], "agp"), 0.5) == targets(AGP(0, 3), 0.5)
    assert targets(AtEpochs([0, 7], "exp"), 0.75) == pytest.approx([0.5, 0.75])


def test_oneshot_and_ratio_map():
    assert OneShot(3).events(0.4) == [(3, 0.4)]
    sched = RatioMap({6: 0.5, 2: 0.1, 4: 0.1})
    assert sched.events() == [(2, 0.1), (4, 0.1), (6, 0.5)]
    assert sched.final_ratio == 0.5 and sched.last_epoch == 6


def test_ratio_map_ignores_final_ratio_value_but_checks_it():
    sched = RatioMap({2: 0.25, 4: 0.5})
    assert sched.events(0.9) == sched.events() == [(2, 0.25), (4, 0.5)]
    assert sched.ratio_at(3, 0.9) == 0.25
    with raises("final_ratio: 1.5 is not allowed; expected a number in [0, 1)"):
        sched.events(1.5)


def test_only_ratio_map_fixes_its_final_ratio():
    assert [OneShot(1).final_ratio, AtEpochs([1]).final_ratio, AGP(0, 1).final_ratio] == [
        None, None, None]


def test_no_compounding_six_events_of_thirty_percent():
    # SparseML's bug: "30% of what is left" six times reaches 1 - 0.7**6 = 88%.
    for sched in (AtEpochs(list(range(6)), "exp"), LinearRamp(0, 5), AGP(0, 5)):
        ratios = targets(sched, 0.3)
        assert len(ratios) == 6 and max(ratios) == ratios[-1] == 0.3


def test_ratio_at_is_a_step_function():
    sched = AtEpochs([2, 4, 6])
    got = [sched.ratio_at(e, 0.6) for e in range(-1, 9)]
    assert got == pytest.approx([0, 0, 0, 0.2, 0.2, 0.4, 0.4, 0.6, 0.6, 0.6])


def test_degenerate_ramp_and_equal_initial_and_final():
    assert AGP(4, 4).events(0.3) == [(4, 0.3)]
    assert targets(LinearRamp(0, 2, initial_ratio=0.3), 0.3) == [0.3, 0.3, 0.3]
    assert targets(LinearRamp(0, 2), 0.0) == [0.0, 0.0, 0.0]


def test_numpy_scalars_are_accepted_and_stored_as_python_types():
    sched = AGP(np.int64(0), np.int32(4), np.int64(2), np.float32(0.25))
    assert sched == AGP(0, 4, 2, 0.25)
    assert all(type(v) in (int, float, str) for v in sched.to_dict().values())
    assert type(sched.events(np.float64(0.5))[-1][1]) is float
    assert RatioMap({np.int64(3): np.float64(0.5)}).to_dict() == {"kind": "map",
                                                                  "ratios": {3: 0.5}}


def test_schedules_are_frozen_and_hashable():
    sched = AGP(0, 4, 2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.end_epoch = 8
    assert len({sched, AGP(0, 4, 2), RatioMap({1: 0.2}), RatioMap([(1, 0.2)])}) == 2


def test_make_schedule_names_every_kind():
    built = [make_schedule("oneshot", epoch=1), make_schedule("epochs", epochs=[1, 2]),
             make_schedule("map", ratios={1: 0.3}), make_schedule("agp", start_epoch=0,
                                                                  end_epoch=2),
             make_schedule("linear", start_epoch=0, end_epoch=2),
             make_schedule("exp", start_epoch=0, end_epoch=2)]
    assert [type(s) for s in built] == [OneShot, AtEpochs, RatioMap, AGP, LinearRamp, ExpRamp]
    assert list(SCHEDULES) == ["oneshot", "epochs", "map", "agp", "linear", "exp"]


def test_from_dict_defaults_and_brief_example():
    sched = schedule_from_dict({"kind": "agp", "start_epoch": 0, "end_epoch": 6,
                                "frequency": 2})
    assert sched == AGP(0, 6, 2, 0.0)
    assert sched.to_dict() == {"kind": "agp", "start_epoch": 0, "end_epoch": 6,
                               "frequency": 2, "initial_ratio": 0.0}


def test_validate_warns_when_no_epoch_is_left_to_fine_tune(caplog):
    with caplog.at_level(logging.WARNING, logger="slim_callbacks.pruning.schedules"):
        assert OneShot(5).validate(7) is not None
        assert not caplog.records
        OneShot(6).validate(7)
    assert "last pruning event is at the last epoch (6)" in caplog.text


def test_docstring_examples_run():
    result = doctest.testmod(schedules, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 8 and result.failed == 0


# ----------------------------------------------------------------------- properties

@settings(max_examples=80, deadline=None)
@given(any_schedule, st.data())
def test_events_are_sorted_monotone_and_end_at_final(sched, data):
    final = final_for(sched, data)
    events = sched.events(final)
    epochs, ratios = [e for e, _ in events], [r for _, r in events]
    expected_final = sched.final_ratio if final is None else final
    assert tuple(epochs) == sched.event_epochs and epochs == sorted(set(epochs))
    assert epochs[-1] == sched.last_epoch
    assert all(a <= b for a, b in zip(ratios, ratios[1:]))
    assert ratios[-1] == expected_final  # exactly, never approximately
    assert all(0.0 <= r <= expected_final for r in ratios)  # no overshoot, no compounding


@settings(max_examples=80, deadline=None)
@given(st.one_of(at_epochs, ramps()), st.data())
def test_curve_targets_strictly_increase_from_initial(sched, data):
    ratios = targets(sched, final_for(sched, data, min_gap=1e-3))
    assert ratios[0] > sched.initial_ratio
    assert all(a < b for a, b in zip(ratios, ratios[1:]))


@settings(max_examples=60, deadline=None)
@given(any_schedule, st.data())
def test_event_epochs_do_not_depend_on_final_ratio(sched, data):
    first, second = final_for(sched, data), final_for(sched, data)
    assert [e for e, _ in sched.events(first)] == [e for e, _ in sched.events(second)]


@settings(max_examples=80, deadline=None)
@given(any_schedule, st.integers(1, 50), st.data())
def test_validate_passes_iff_every_event_fires(sched, num_epochs, data):
    final = final_for(sched, data)
    if sched.last_epoch >= num_epochs:
        with pytest.raises(ConfigError, match=f"expected every event epoch < num_epochs="
                                              f"{num_epochs} "):
            sched.validate(num_epochs)
    else:
        assert sched.validate(num_epochs) is sched
        assert all(e < num_epochs for e, _ in sched.events(final))


@settings(max_examples=60, deadline=None)
@given(any_schedule, st.data())
def test_ratio_at_matches_the_last_event_at_or_before(sched, data):
    final = final_for(sched, data)
    events = sched.events(final)
    for e in range(-2, sched.last_epoch + 3):
        fired = [r for ev, r in events if ev <= e]
        assert sched.ratio_at(e, final) == (fired[-1] if fired else 0.0)


@settings(max_examples=80, deadline=None)
@given(any_schedule)
def test_round_trips_dict_yaml_and_pickle(sched):
    as_dict = sched.to_dict()
    assert as_dict["kind"] == sched.kind
    assert schedule_from_dict(as_dict) == sched
    assert schedule_from_dict(yaml.safe_load(yaml.safe_dump(as_dict))) == sched
    assert make_schedule(**as_dict) == sched
    restored = pickle.loads(pickle.dumps(sched))
    assert restored == sched and hash(restored) == hash(sched)
    assert restored.event_epochs == sched.event_epochs


# ----------------------------------------------------------------------- errors

@pytest.mark.parametrize("build, message", [
    (lambda: OneShot(-1), "epoch: -1 is not allowed; expected an integer epoch >= 0"),
    (lambda: OneShot(True), "epoch: True is not allowed; expected an integer epoch >= 0"),
    (lambda: OneShot(2.0), "epoch: 2.0 is not allowed; expected an integer epoch >= 0"),
    (lambda: OneShot("2"), "epoch: '2' is not allowed; expected an integer epoch >= 0"),
    (lambda: AGP(-2, 4), "start_epoch: -2 is not allowed; expected an integer epoch >= 0"),
    (lambda: AGP(0, 4.5), "end_epoch: 4.5 is not allowed; expected an integer epoch >= 0"),
    (lambda: AGP(5, 3), "end_epoch: 3 is not allowed; expected an epoch >= start_epoch=5"),
    (lambda: LinearRamp(0, 4, 0), "frequency: 0 is not allowed; expected an integer >= 1"),
    (lambda: ExpRamp(0, 4, True), "frequency: True is not allowed; expected an integer >= 1"),
    (lambda: AGP(1, 6, 2), "end_epoch: 6 is not allowed; expected start_epoch + a multiple of "
                           "frequency (start_epoch=1, frequency=2: e.g. 5 or 7)"),
    (lambda: AGP(0, 4, initial_ratio=1.0),
     "initial_ratio: 1.0 is not allowed; expected a number in [0, 1)"),
    (lambda: LinearRamp(0, 4, initial_ratio=-0.1),
     "initial_ratio: -0.1 is not allowed; expected a number in [0, 1)"),
    (lambda: AtEpochs([1], initial_ratio=math.nan),
     "initial_ratio: nan is not allowed; expected a number in [0, 1)"),
    (lambda: AtEpochs([]), "epochs: [] is not allowed; expected a non-empty list of epochs"),
    (lambda: AtEpochs(4), "epochs: 4 is not allowed; expected a non-empty list of epochs"),
    (lambda: AtEpochs("246"), "epochs: '246' is not allowed; expected a non-empty list"),
    (lambda: AtEpochs([2, 6, 4]),
     "epochs: [2, 6, 4] is not allowed; expected strictly increasing epochs"),
    (lambda: AtEpochs([2, 2]), "epochs: [2, 2] is not allowed; expected strictly increasing"),
    (lambda: AtEpochs([2, False]),
     "epochs[1]: False is not allowed; expected an integer epoch >= 0"),
    (lambda: AtEpochs([2], curve="cosine"),
     "curve: 'cosine' is not allowed; expected one of linear, agp, exp"),
    (lambda: RatioMap({}), "ratios: {} is not allowed; expected a non-empty {epoch: ratio} map"),
    (lambda: RatioMap(0.5), "ratios: 0.5 is not allowed; expected a non-empty {epoch: ratio}"),
    (lambda: RatioMap({2: 0.5, 4: 0.3}),
     "ratios[4]: 0.3 is not allowed; expected a ratio >= 0.5 (the ratio at epoch 2): "
     "targets never decrease"),
    (lambda: RatioMap({2: 1.0}), "ratios[2]: 1.0 is not allowed; expected a number in [0, 1)"),
    (lambda: RatioMap({2: "0.5"}),
     "ratios[2]: '0.5' is not allowed; expected a number in [0, 1)"),
    (lambda: RatioMap({"2": 0.5}),
     "ratios key: '2' is not allowed; expected an integer epoch >= 0"),
    (lambda: RatioMap({-1: 0.5}), "ratios key: -1 is not allowed; expected an integer epoch"),
    (lambda: RatioMap([(2, 0.1), (2, 0.2)]),
     "ratios key: 2 is not allowed; expected each epoch once"),
])
def test_construction_errors(build, message):
    with raises(message):
        build()


def test_ramp_base_is_abstract():
    with pytest.raises(TypeError, match="Ramp is abstract"):
        Ramp(0, 4)


@pytest.mark.parametrize("final, message", [
    (1.0, "final_ratio: 1.0 is not allowed; expected a number in [0, 1)"),
    (-0.2, "final_ratio: -0.2 is not allowed; expected a number in [0, 1)"),
    (True, "final_ratio: True is not allowed; expected a number in [0, 1)"),
    (None, "final_ratio: None is not allowed; expected a number in [0, 1)"),
])
@pytest.mark.parametrize("sched", [OneShot(1), AtEpochs([1, 2]), AGP(0, 2)], ids=repr)
def test_bad_final_ratio(sched, final, message):
    with raises(message):
        sched.events(final)


def test_final_ratio_below_initial_ratio():
    with raises("final_ratio: 0.1 is not allowed; expected a number in [initial_ratio=0.2, 1)"):
        AGP(0, 2, initial_ratio=0.2).events(0.1)


@pytest.mark.parametrize("sched, num_epochs, message", [
    (AGP(0, 6, 2), 6, "end_epoch: 6 is not allowed; expected every event epoch < num_epochs=6 "
                      "(epochs are 0-based: fit(epochs=6) ends epochs 0..5, so an event at "
                      "epoch 6 would never fire)"),
    (OneShot(3), 2, "epoch: 3 is not allowed; expected every event epoch < num_epochs=2"),
    (AtEpochs([2, 4, 6]), 5, "epochs: 6 is not allowed; expected every event epoch < "
                             "num_epochs=5"),
    (RatioMap({1: 0.1, 9: 0.2}), 9, "ratios: 9 is not allowed; expected every event epoch < "
                                    "num_epochs=9"),
    (OneShot(0), 0, "num_epochs: 0 is not allowed; expected an integer >= 1"),
    (OneShot(0), True, "num_epochs: True is not allowed; expected an integer >= 1"),
    (OneShot(0), 3.0, "num_epochs: 3.0 is not allowed; expected an integer >= 1"),
])
def test_validate_errors(sched, num_epochs, message):
    with raises(message):
        sched.validate(num_epochs)


@pytest.mark.parametrize("epoch", [True, 1.0, "1"])
def test_ratio_at_rejects_non_integer_epochs(epoch):
    with raises(f"epoch: {epoch!r} is not allowed; expected an integer epoch"):
        OneShot(1).ratio_at(epoch, 0.5)


def test_make_schedule_errors():
    with raises("kind: 'cosine' is not allowed; expected one of oneshot, epochs, map, agp, "
                "linear, exp"):
        make_schedule("cosine")
    with raises("frequncy: 2 is not allowed; expected one of the keys of kind 'agp': "
                "start_epoch, end_epoch, frequency, initial_ratio (did you mean 'frequency'?)"):
        make_schedule("agp", start_epoch=0, end_epoch=4, frequncy=2)
    with raises("end_epoch: <missing> is not allowed; expected a value: kind 'linear' "
                "requires it"):
        make_schedule("linear", start_epoch=0)


@pytest.mark.parametrize("d, key, message", [
    ([("kind", "agp")], "schedule", "schedule: [('kind', 'agp')] is not allowed; expected a "
                                    "mapping with a 'kind' key"),
    ({"epoch": 2}, "schedule", "schedule.kind: <missing> is not allowed; expected one of "
                               "oneshot, epochs, map, agp, linear, exp"),
    ({"kind": 3}, "schedule", "schedule.kind: 3 is not allowed; expected one of oneshot"),
    ({"kind": "agp", "start_epoch": 0}, "schedule",
     "schedule.end_epoch: <missing> is not allowed; expected a value"),
    ({"kind": "agp", "start_epoch": 0, "end_epoch": "6"}, "schedule",
     "schedule.end_epoch: '6' is not allowed; expected an integer epoch >= 0"),
    ({"kind": "oneshot", "epoch": 1, "ratio": 0.5}, "schedule",
     "schedule.ratio: 0.5 is not allowed; expected one of the keys of kind 'oneshot': "
     "epoch"),
    ({"kind": "agp", "start_epoch": 0, "end_epoch": 4, "frequency": 3}, "pruning.schedule",
     "pruning.schedule.end_epoch: 4 is not allowed; expected start_epoch + a multiple of "
     "frequency"),
    ({"kind": "map", "ratios": {2: 0.5, 3: 0.4}}, "pruning.schedule",
     "pruning.schedule.ratios[3]: 0.4 is not allowed; expected a ratio >= 0.5"),
    ({"kind": "epochs", "epochs": [1, 2], "curve": "cos"}, "",
     "curve: 'cos' is not allowed; expected one of linear, agp, exp"),
])
def test_schedule_from_dict_errors_name_the_key(d, key, message):
    with raises(message):
        schedule_from_dict(d, key=key)


def test_every_kind_is_a_schedule_with_its_own_name():
    assert all(issubclass(cls, Schedule) and cls.kind == kind for kind, cls in SCHEDULES.items())
