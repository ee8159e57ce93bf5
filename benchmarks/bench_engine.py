"""Time the pruning engine on MobileNetV1 (224x224, 1000 classes), and on ResNet-50 and
ViT-B with ``--models``.

    python benchmarks/bench_engine.py [--repeats 7] [--models MobileNetV1 ResNet-50 ViT-B]
    python benchmarks/bench_engine.py --against main~1 --processes 4   # ratio to another ref

Reports the median of ``--repeats`` runs for: tracing, planning with l1_norm and fpgm
(scoring + selection, no mutation), applying the plan (in-place surgery plus the
verifying forward pass), the FPGM score function alone on the 13 pointwise convs, and
the public one-call path ``prune(net, shape, ratios)`` (trace, strategy, plan, apply)
on a fresh copy. ResNet-50 and ViT-B (``benchmarks/vit.py``) prune 30% of every group
(no FPGM rows). ``uniform_ratio -50% MACs``: the bisection for one ratio of every group
that removes half the MACs, on the trace made above (the FLOPs model it builds
included). ``--against REF`` runs the same measurements on a git ref too, in
fresh processes interleaved with this tree's (``benchmarks/against.py``), and prints
each step's ratio this/REF.
PaddleSlim 2.6.0 does not run on this Paddle/numpy, so its numbers (0.7 s trace,
0.07 s prune, 1.9 s FPGM, from ../shared/reference/paddleslim.md) are quoted, not
measured side by side.
"""
import argparse
import copy
import json
import statistics
import time
import warnings

import paddle
from against import add_options, compare, print_table

from slim_callbacks import prune, trace
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.engine.criteria import fpgm, rows
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import resolve_ratios

POINTWISE = {"conv*._pointwise_conv*": 0.3125}
SHAPE = [1, 3, 224, 224]


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(name):
    if name == "MobileNetV1":
        return paddle.vision.models.mobilenet_v1(scale=1.0, num_classes=1000), POINTWISE
    if name == "ResNet-50":
        return paddle.vision.models.resnet50(num_classes=1000), 0.3
    from vit import vit
    return vit(name), 0.3


def measure(repeats, name="MobileNetV1"):
    """Median seconds of each step (see the module docstring)."""
    warnings.filterwarnings("ignore")
    paddle.seed(0)
    net, cut = build(name)
    net(paddle.zeros(SHAPE))  # warm up kernels
    graph = trace(net, SHAPE)
    ratios = resolve_ratios(graph, cut)
    weights = [layer.weight.numpy() for name, layer in net.named_sublayers()
               if name.endswith("_pointwise_conv.0")]

    def apply_once():
        copy_ = copy.deepcopy(net)
        plan = plan_pruning(copy_, graph, ratios, "l1_norm")
        start = time.perf_counter()
        plan.apply(copy_, input_shape=SHAPE)
        return time.perf_counter() - start

    def prune_once():
        copy_ = copy.deepcopy(net)
        start = time.perf_counter()
        prune(copy_, SHAPE, cut)
        return time.perf_counter() - start

    results = {
        "trace": timed(lambda: trace(net, SHAPE), repeats),
        "plan l1_norm": timed(lambda: plan_pruning(net, graph, ratios, "l1_norm"), repeats),
        "plan fpgm": timed(lambda: plan_pruning(net, graph, ratios, "fpgm"), repeats),
        "fpgm scores only": timed(lambda: [fpgm(rows(w, 0)) for w in weights], repeats),
        "apply (surgery + check)": statistics.median(apply_once() for _ in range(repeats)),
        "prune() one call": statistics.median(prune_once() for _ in range(repeats)),
    }
    results["uniform_ratio -50% MACs"] = timed(lambda: uniform_ratio(net, SHAPE, 0.5, graph=graph),
                                               repeats)
    if not weights:
        del results["fpgm scores only"]
    results["trace + plan + apply (l1_norm)"] = (results["trace"] + results["plan l1_norm"]
                                                + results["apply (surgery + check)"])
    prefix = "" if name == "MobileNetV1" else f"{name}: "
    return {prefix + key: seconds for key, seconds in results.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", nargs="+", default=["MobileNetV1"],
                        choices=["MobileNetV1", "ResNet-50", "ViT-S", "ViT-B"])
    add_options(parser, processes=4)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps({k: v for name in args.models for k, v in measure(args.repeats, name).items()}))
        return
    if args.against:
        print_table(args.against, compare(args.against, "bench_engine.py",
                                          ["--repeats", str(args.repeats), "--models", *args.models],
                                          args.processes))
        return
    print("| step | median seconds |\n|---|---|")
    for name in args.models:
        for step, seconds in measure(args.repeats, name).items():
            print(f"| {step} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
