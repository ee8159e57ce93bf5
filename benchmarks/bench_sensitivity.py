"""Sensitivity analysis: ours (masking, and in-place pruning) vs a naive baseline.

The naive baseline is what PaddleSlim's ``sensitive()`` amounts to, written with this
package's engine because PaddleSlim itself does not run on Paddle 3 / numpy 2 (see
shared/reference/paddleslim.md): trace once, then for every (layer, ratio) deep-copy
the network, physically prune the copy with ``plan_pruning(...).apply`` and evaluate it.

Ours is ``slim_callbacks.sensitivity.sensitivity`` with ``method="mask"`` (default:
zero the consumers' input slices, no copy, no surgery, each group scored once, empty
and repeated selections not evaluated) and ``method="prune"`` (physical pruning in
place, undone after each evaluation, no copy).

All runs use the same model (MobileNetV1, BatchNorm statistics set from one batch so
the metric reacts to pruning), the same eval batches (synthetic, fixed) and metric
(negative cross-entropy, higher is better), the same layers (the 13 pointwise convs,
as in PaddleSlim's MobileNetV1 recipe) and ratios. Runs are interleaved ABC CBA ... so
load from other processes on the machine affects every method alike; per method the
median wall time is reported. Every (layer, ratio) loss is compared with the baseline.

    python benchmarks/bench_sensitivity.py --scale 1.0 --size 64 --batches 2 --batch-size 16
"""
import argparse
import copy
import logging
import os
import statistics
import time
import warnings

import numpy as np
import paddle
import paddle.nn as nn

from slim_callbacks import trace
from slim_callbacks.pruner import plan_pruning, resolve_ratios
from slim_callbacks.sensitivity import sensitivity

warnings.filterwarnings("ignore")
POINTWISE = "conv*._pointwise_conv*"


def build(scale, size):
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=scale, num_classes=10)
    rng = np.random.default_rng(0)
    bns = [layer for layer in net.sublayers() if isinstance(layer, nn.BatchNorm2D)]
    for bn in bns:  # scales and shifts of a trained network, not 1 and 0
        c = bn.weight.shape[0]
        bn.weight.set_value(rng.uniform(0.2, 1.5, c).astype("float32"))
        bn.bias.set_value(rng.normal(0, 0.2, c).astype("float32"))
        bn._momentum = 0.0  # running statistics = one batch's statistics
    net.train()
    with paddle.no_grad():
        net(paddle.randn([16, 3, size, size]))
    for bn in bns:
        bn._momentum = 0.9
    net.eval()
    return net


def make_eval(batches, batch_size, size):
    rng = np.random.default_rng(1)
    data = [(paddle.to_tensor(rng.normal(size=(batch_size, 3, size, size)).astype("float32")),
             paddle.to_tensor(rng.integers(0, 10, (batch_size, 1)).astype("int64")))
            for _ in range(batches)]

    def eval_fn(network):
        network.eval()
        with paddle.no_grad():
            return -sum(float(nn.functional.cross_entropy(network(x), y)) for x, y in data) / len(data)
    return eval_fn


def naive(net, eval_fn, shape, layers, ratios, criterion):
    """Deep copy, physical pruning and evaluation for every (layer, ratio)."""
    graph = trace(net, shape)
    groups = list(resolve_ratios(graph, {p: 0.5 for p in layers}))
    base = eval_fn(net)
    out = {}
    for group in groups:
        out[group] = {}
        for ratio in ratios:
            pruned = copy.deepcopy(net)
            plan_pruning(pruned, graph, {group: ratio}, criterion).apply(pruned)
            out[group][ratio] = (base - eval_fn(pruned)) / abs(base)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ratios", type=float, nargs="+", default=[round(0.1 * k, 1) for k in range(1, 10)])
    parser.add_argument("--layers", nargs="+", default=[POINTWISE])
    parser.add_argument("--criterion", default="l1_norm")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds per method")
    args = parser.parse_args()
    logging.getLogger("slim_callbacks").setLevel(logging.WARNING)

    shape = [1, 3, args.size, args.size]
    net = build(args.scale, args.size)
    eval_fn = make_eval(args.batches, args.batch_size, args.size)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    methods = {
        "naive": lambda: naive(net, eval_fn, shape, args.layers, args.ratios, args.criterion),
        "mask": lambda: sensitivity(net, eval_fn, shape, args.layers, args.ratios, args.criterion,
                                    method="mask", progress=False),
        "prune": lambda: sensitivity(net, eval_fn, shape, args.layers, args.ratios, args.criterion,
                                     method="prune", progress=False),
    }
    eval_fn(net)  # warm-up
    t = time.perf_counter()
    for _ in range(3):
        eval_fn(net)
    one_eval = (time.perf_counter() - t) / 3
    times = {name: [] for name in methods}
    results = {}
    order = list(methods)
    for r in range(args.rounds):
        for name in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            results[name] = methods[name]()
            times[name].append(time.perf_counter() - t)
            print(f"round {r} {name:5s} {times[name][-1]:7.2f} s", flush=True)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in net.state_dict().items())

    n_layers, n_ratios = len(results["naive"]), len(args.ratios)
    diff = {name: max(abs(results[name][g][r] - results["naive"][g][r])
                      for g in results["naive"] for r in args.ratios) for name in ("mask", "prune")}
    biggest = max(abs(v) for losses in results["naive"].values() for v in losses.values())
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"\npaddle {paddle.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"one evaluation {one_eval:.3f} s, {n_layers} layers x {n_ratios} ratios, "
          f"largest |loss| {biggest:.3f}")
    print("\n| model | input | eval data | layers x ratios | naive deepcopy+prune (s) | "
          "ours mask (s) | ours prune in place (s) | speedup mask / prune | max abs loss diff mask / prune |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| MobileNetV1 x{args.scale:g} | {args.size}x{args.size} | {args.batches} x {args.batch_size} "
          f"| {n_layers} x {n_ratios} | {med['naive']:.1f} | {med['mask']:.1f} | {med['prune']:.1f} "
          f"| {med['naive'] / med['mask']:.2f}x / {med['naive'] / med['prune']:.2f}x "
          f"| {diff['mask']:.1e} / {diff['prune']:.1e} |")


if __name__ == "__main__":
    main()
