"""The pure helpers of benchmarks/bench_accuracy.py: every method is a valid recipe that
builds the PruneCallback it names; the report's statistics (the bench itself trains)."""
import os
import sys

import pytest
from helpers import BENCHMARKS

sys.path.insert(0, BENCHMARKS)
import bench_accuracy  # noqa: E402

from slim_callbacks.app.builders import build_callbacks, build_network, recipe_pruner  # noqa: E402
from slim_callbacks.app.job import load_job  # noqa: E402
from slim_callbacks.callbacks import PruneCallback  # noqa: E402


def prune_callback(method, tmp_path, ratio=0.75):
    job = load_job(bench_accuracy.cell_recipe(method, ratio, 1, 12, 0.03, str(tmp_path)),
                   untrained_teacher=True)
    assert job.recipe.train.epochs == 12 and job.recipe.train.seed == 1
    network = build_network(job.recipe)
    callbacks = build_callbacks(job, recipe_pruner(job, network), verbose=0)
    return next((c for c in callbacks if isinstance(c, PruneCallback)), None)


@pytest.mark.parametrize("method, criterion, events, extra", [
    ("oneshot_start", "l1_norm", [0], {}),
    ("oneshot_mid", "l1_norm", [6], {}),
    ("agp", "l1_norm", [2, 4, 6], {}),
    ("agp_recal", "l1_norm", [2, 4, 6], {"recalibrate_bn": 8}),
    ("slim", "slim", [2, 4, 6], {"fold_bn_shift": True}),
    ("opt_slim", "opt_slim", [2, 4, 6], {"fold_bn_shift": True}),
    ("taylor", "taylor", [2, 4, 6], {}),
])
def test_each_method_builds_its_prune_callback(tmp_path, method, criterion, events, extra):
    cb = prune_callback(method, tmp_path)
    assert cb.criterion.name == criterion
    assert sorted(e for e, _ in cb.schedule.validate(12).events(0.5)) == events
    owner = {k: cb.spec.aids if hasattr(cb.spec.aids, k) else cb for k in extra}  # an aid, or not
    assert {k: getattr(owner[k], k) for k in extra} == extra


def test_distill_budget_and_unpruned_cells(tmp_path):
    assert prune_callback("agp_distill", tmp_path / "d").distill.alpha == 0.5
    budget = prune_callback("budget", tmp_path / "b").budget
    assert budget.max_drop == 0.03 and budget.min_step == 0.02
    assert prune_callback("unpruned", tmp_path / "u") is None


def cells(method, ratio, values):
    return {f"{method}|{ratio:g}|{i}": {"method": method, "ratio": ratio, "seed": i, "top1": v,
                                        "curve": [v], "events": [], "before_event": {},
                                        "macs_cut": ratio, "seconds": 1.0}
            for i, v in enumerate(values)}


def test_noise_table_calls_a_gap_within_two_standard_errors_noise():
    results = {"cells": {**cells("oneshot_start", 0.5, [0.90, 0.91, 0.92]),
                         **cells("agp", 0.5, [0.95, 0.96, 0.97]),
                         **cells("taylor", 0.5, [0.89, 0.92, 0.95])}}
    table = bench_accuracy.noise_table(results)
    assert "| AGP (L1) | +5.0 ± 1.6: better |" in table
    assert "| Taylor (AGP) | +1.0 ± 3.7: within noise |" in table


def test_trained_teacher_method_names_the_unpruned_cell_weights_of_its_seed():
    section = bench_accuracy.pruning_section("agp_distill_trained", 0.5, 12, 0.03, seed=2)
    assert section["distill"]["teacher"] == {"pretrained": bench_accuracy.teacher_path(2)}
    assert bench_accuracy.teacher_path(2).endswith(os.path.join("teachers", "seed2.pdparams"))
