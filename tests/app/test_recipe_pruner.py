"""A recipe's commands build one Pruner: the strategy and ``round_to: auto`` are resolved
once and the network traced once per structure, from ``plan`` to the callback's events."""
import copy

import paddle
from helpers import BASE_RECIPE

from slim_callbacks.app.builders import build_network
from slim_callbacks.app.job import Job, load_job
from slim_callbacks.app.planning import plan
from slim_callbacks.app.runner import dry_run_recipe, run
from slim_callbacks.latency import auto_round
from slim_callbacks.pruning.pruner import Pruner, prune
from slim_callbacks.tracing import tracer as tracer_module

TINY = ["model.kwargs={scale: 0.25}", "input_shape=[1, 3, 16, 16]", "logging.visualdl=false",
        "pruning.ratios=null", "pruning.target_flops_reduction=0.4",
        "pruning.layers=['conv*._pointwise_conv*']"]


def tiny_job(*overrides) -> Job:
    return load_job(copy.deepcopy(BASE_RECIPE), [*TINY, *overrides])


def counting(monkeypatch, owner, name):
    calls = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(owner, name, wrapper)
    return calls


def test_plan_traces_once_and_prunes_as_the_stand_alone_functions(monkeypatch):
    job = tiny_job()
    made = counting(monkeypatch, tracer_module.Tracer, "__init__")
    result = plan(job)
    assert len(made) == 1
    monkeypatch.undo()
    paddle.seed(job.recipe.train.seed)
    network = build_network(job.recipe)
    alone = Pruner(network, [1, 3, 16, 16], target_flops_reduction=0.4,
                   layers=["conv*._pointwise_conv*"]).prepare()
    assert result["ratios"] == alone.ratios
    prune(network, [1, 3, 16, 16], alone.ratios)
    widths = {name: shape[1] for name, shape in result["layers"].items()}
    assert widths["conv6._pointwise_conv.0"] == network.conv6._pointwise_conv[0].weight.shape[0]


def test_a_run_resolves_round_to_auto_once_and_traces_once_per_structure(monkeypatch, tmp_path):
    job = dry_run_recipe(tiny_job("pruning.round_to=auto", "deploy.latency=false"),
                         str(tmp_path / "run"))
    monkeypatch.setattr(auto_round, "auto_round_to",
                        lambda network, shape, **kw: auto_round.RoundingChoice(4))
    resolved = counting(monkeypatch, auto_round, "auto_round_to")
    made = counting(monkeypatch, tracer_module.Tracer, "__init__")
    summary = run(job, verbose=0, emit=lambda text: None)
    assert len(resolved) == 1 and len(made) == 1
    assert summary["round_to_auto"] == 4 and summary["flops_reduction"] > 0.3
