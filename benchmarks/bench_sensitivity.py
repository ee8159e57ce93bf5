"""Sensitivity analysis: ours vs PaddleSlim's sensitive() (and a naive baseline), side by side.

PaddleSlim (``--paddleslim-python``): PaddleSlim 2.6.0's dygraph
``L1NormFilterPruner(net, [1, 3, H, W]).sensitive(eval_func, sen_file, target_vars)``,
run by ``benchmarks/paddleslim_sensitive.py`` in a subprocess with PaddleSlim's own
virtual environment, on the same weights (saved to a temporary ``.pdparams``), the same
eval batches (a temporary ``.npz``) and the same layers (our structural names mapped to
PaddleSlim's ``conv2d_N.w_0`` through ``named_parameters``). Its time is measured inside
that process (graph tracing + ``sensitive()``, without Python start-up and imports);
its losses are converted to ``(base - metric) / |base|`` (PaddleSlim divides by
``base + 1e-3``). It always uses ratios 0.1, ..., 0.9 and L1 norm. Make the venv once
(outside the repository, never committed):

    python -m venv /tmp/pslim_venv
    /tmp/pslim_venv/bin/pip install paddlepaddle==3.3.1 paddleslim==2.6.0 "numpy<2" six requests decorator

(``paddleslim_sensitive.py`` sets ``FLAGS_enable_pir_api=0`` before importing paddle and
aliases ``paddle.base.dygraph.base._to_static_mode_guard_`` to Paddle 3's
``to_static_mode_guard``; without that alias every PaddleSlim pruner fails with
``AttributeError: ... has no attribute '_to_static_mode_guard_'``.)

The naive baseline (``--methods naive``) is what ``sensitive()`` amounts to, written
with this package's engine: trace once, then for every (layer, ratio) deep-copy the
network, physically prune the copy with ``plan_pruning(...).apply`` and evaluate it.

``--methods api`` runs the PaddleSlim front end,
``slim_callbacks.paddleslim.L1NormFilterPruner(net, shape).sensitive(eval_func,
target_vars=...)`` (mask + prefix cache, one process).

Ours is ``slim_callbacks.analysis.sensitivity.sensitivity`` with ``method="mask"`` (zero the
consumers' input slices, no copy, no surgery, each group scored once, empty and
repeated selections not evaluated) and ``method="prune"`` (physical pruning in place,
undone after each evaluation, no copy), each without and with the prefix cache
(``+cache``: the layers before a group's first changed layer run once per group).

All runs use the same model (MobileNetV1, BatchNorm statistics set from one batch so
the metric reacts to pruning), the same eval batches (synthetic, fixed) and metric
(negative cross-entropy, higher is better), the same layers (the 13 pointwise convs,
as in PaddleSlim's MobileNetV1 recipe) and ratios. Runs are interleaved ABC CBA ... so
load from other processes on the machine affects every method alike; per method the
median wall time is reported. Every (layer, ratio) loss is compared with the reference
(PaddleSlim if given, else naive). Paddle sets OMP_NUM_THREADS=1 when it is unset, so
ours runs one thread per process; ``--workers 1 2`` runs each of our methods in one
process and in two forked workers, ``--paddleslim-threads 1 2`` runs PaddleSlim with
``OMP_NUM_THREADS`` 1 and 2, and the table compares each run with PaddleSlim on as
many cores.

    python benchmarks/bench_sensitivity.py --scale 1.0 --size 224 --batches 2 --batch-size 8 \
        --methods mask+cache prune+cache --workers 1 2 \
        --paddleslim-python /tmp/pslim_venv/bin/python --paddleslim-threads 1 2
    python benchmarks/bench_sensitivity.py --scale 1.0 --size 64 --batches 2 --batch-size 16

Measured with the first command (13 x 9, 2 rounds, one evaluation 0.36 s; BENCHMARKS.md):
PaddleSlim 45.7 s (39.3 s with 2 threads), mask+cache 16.4 s (2.79x), with 2 workers
9.1 s (5.04x; 4.33x against PaddleSlim's 2 threads); max abs loss difference 2.9e-07.
"""
import argparse
import copy
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
import warnings

import numpy as np
import paddle
import paddle.nn as nn

from slim_callbacks import trace
from slim_callbacks.analysis.sensitivity import sensitivity
from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.planner import plan_pruning
from slim_callbacks.engine.ratios import chosen_groups, resolve_ratios
from slim_callbacks.paddleslim import L1NormFilterPruner

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
    eval_fn.data = data
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


def api(net, eval_fn, shape, layers):
    """``slim_callbacks.paddleslim.L1NormFilterPruner(net, shape).sensitive(...)`` (the
    PaddleSlim front end), its table keyed back by layer."""
    table = layer_table(net)
    names = {table[g.name].weight.name: g.name for g in chosen_groups(trace(net, shape), layers)}
    losses = L1NormFilterPruner(net, shape).sensitive(lambda: eval_fn(net), target_vars=list(names))
    return {names[name]: curve for name, curve in losses.items()}


def paddleslim_runner(python, net, data, scale, layers, workdir, threads=1):
    """A callable running benchmarks/paddleslim_sensitive.py in PaddleSlim's venv on the
    same weights and batches with ``threads`` OpenMP threads; returns its losses and
    records its own timing."""
    params, batches = os.path.join(workdir, "net.pdparams"), os.path.join(workdir, "eval.npz")
    paddle.save(net.state_dict(), params)
    np.savez(batches, x=np.stack([x.numpy() for x, _ in data]), y=np.stack([y.numpy() for _, y in data]))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paddleslim_sensitive.py")
    out = os.path.join(workdir, "paddleslim.json")
    env = {**os.environ, "FLAGS_enable_pir_api": "0", "OMP_NUM_THREADS": str(threads)}
    inner = []

    def run():
        cmd = [python, script, "--params", params, "--data", batches, "--scale", str(scale),
               "--num-classes", "10", "--out", out, "--layers", *layers]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"PaddleSlim failed ({' '.join(cmd)}):\n{proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as f:
            result = json.load(f)
        inner.append(result["seconds"])
        return {layer: {float(r): v for r, v in losses.items()} for layer, losses in result["losses"].items()}
    return run, inner


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
    parser.add_argument("--methods", nargs="+", default=["naive", "mask", "prune", "mask+cache", "prune+cache"],
                        choices=["naive", "mask", "prune", "mask+cache", "prune+cache", "api"])
    parser.add_argument("--paddleslim-python", help="python of a venv with paddleslim 2.6.0 (see above); "
                                                    "adds PaddleSlim's sensitive() as the reference")
    parser.add_argument("--paddleslim-threads", type=int, nargs="+", default=[1],
                        help="OMP_NUM_THREADS values to run PaddleSlim with (the first is the reference)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1],
                        help="worker process counts to run each of our methods with")
    args = parser.parse_args()
    logging.getLogger("slim_callbacks").setLevel(logging.WARNING)

    shape = [1, 3, args.size, args.size]
    net = build(args.scale, args.size)
    eval_fn = make_eval(args.batches, args.batch_size, args.size)
    before = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    ours = {(name if workers == 1 else f"{name} x{workers} workers"):
            (lambda method=name.split("+")[0], cache=name.endswith("+cache"), workers=workers:
             sensitivity(net, eval_fn, shape, args.layers, args.ratios, args.criterion,
                         method=method, cache=cache, workers=workers, progress=False))
            for name in args.methods if name not in ("naive", "api") for workers in args.workers}
    methods = {}
    if "api" in args.methods:
        ours["api"] = lambda: api(net, eval_fn, shape, args.layers)
    if "naive" in args.methods:
        methods["naive"] = lambda: naive(net, eval_fn, shape, args.layers, args.ratios, args.criterion)
    workdir = tempfile.TemporaryDirectory()
    inner = {}
    if args.paddleslim_python:
        if args.ratios != [round(0.1 * k, 1) for k in range(1, 10)] or args.criterion != "l1_norm":
            raise SystemExit("PaddleSlim's sensitive() has fixed ratios 0.1..0.9 and L1 norm")
        layers = [g.name for g in chosen_groups(trace(net, shape), args.layers)]
        for threads in args.paddleslim_threads:
            name = "paddleslim" if threads == args.paddleslim_threads[0] else f"paddleslim {threads} threads"
            methods[name], inner[name] = paddleslim_runner(args.paddleslim_python, net, eval_fn.data,
                                                           args.scale, layers, workdir.name, threads)
    methods.update(ours)
    ref = "paddleslim" if args.paddleslim_python else "naive"
    if ref not in methods:
        raise SystemExit("nothing to compare with: add naive to --methods or give --paddleslim-python")
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
            extra = f" (inside PaddleSlim's process: {inner[name][-1]:.2f} s)" if name in inner else ""
            print(f"round {r} {name:11s} {times[name][-1]:7.2f} s{extra}", flush=True)
    assert all(np.array_equal(v.numpy(), before[k]) for k, v in net.state_dict().items())
    workdir.cleanup()

    n_layers, n_ratios = len(results[ref]), len(args.ratios)
    diff = {name: max(abs(results[name][g][r] - results[ref][g][r]) for g in results[ref] for r in args.ratios)
            for name in methods if name != ref}
    biggest = max(abs(v) for losses in results[ref].values() for v in losses.values())
    times.update(inner)  # PaddleSlim's own timing (tracing + sensitive()), without starting Python
    med = {name: statistics.median(v) for name, v in times.items()}
    label = ("PaddleSlim sensitive() (trace + sensitive, in its process)" if ref == "paddleslim"
             else "naive deepcopy+prune")
    print(f"\npaddle {paddle.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"one evaluation {one_eval:.3f} s, {n_layers} layers x {n_ratios} ratios, "
          f"largest |loss| {biggest:.3f}, reference: {label}, median of {args.rounds} rounds")
    cores = {name: 1 for name in methods}
    cores.update({name: int(name.split(" x")[1].split()[0]) for name in methods if " workers" in name})
    cores.update({name: int(name.split()[1]) for name in methods if name.startswith("paddleslim ")})
    peers = {cores[name]: name for name in methods if name.startswith("paddleslim")}
    print("\n| method | cores | time (s) | speedup vs reference | vs PaddleSlim on as many cores "
          "| max abs loss diff vs reference |")
    print("|---|---|---|---|---|---|")
    for name in [ref] + [n for n in methods if n != ref]:
        peer = peers.get(cores[name])
        same_cores = f"{med[peer] / med[name]:.2f}x" if peer and peer != name else "-"
        label_name = label if name == ref else name
        print(f"| {label_name} | {cores[name]} | {med[name]:.1f} | {med[ref] / med[name]:.2f}x | "
              f"{same_cores} | {'-' if name == ref else f'{diff[name]:.1e}'} |")
    print(f"\nMobileNetV1 x{args.scale:g}, {args.size}x{args.size}, eval {args.batches} x {args.batch_size}")


if __name__ == "__main__":
    main()
