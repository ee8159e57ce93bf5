"""Step-time overhead of PruneCallback + BNScaleL1 + VisualDLLogger outside pruning epochs.

A = plain ``model.fit``; B = the same fit with ``PruneCallback(criterion="slim")``
beside a ``BNScaleL1(1e-4)`` and a ``VisualDLLogger``, whose only event is at the end of
the LAST epoch. Steps are timed between consecutive
``on_train_batch_begin`` calls, so they include
every callback's per-step work (VisualDL scalars, the BN L1 term in the optimizer); the
epoch boundaries include the per-epoch work (FLOPs profile, BN histograms); the last
epoch's end, where the pruning event happens, is not timed.
A and B are interleaved (ABBA order) in one process on freshly built, identically seeded
models; median step times (robust to other load on the machine) plus the median extra
time of an epoch boundary, amortized over the epoch's steps, are compared.

    python benchmarks/bench_callback_overhead.py --rounds 6 --epochs 3 --steps 20
    python benchmarks/bench_callback_overhead.py --against main~1 --rounds 2   # vs another ref

``--against REF`` measures the same A/B ratios on a git ref too, in fresh processes
interleaved with this tree's (``benchmarks/against.py``), and prints both.
``--hook-cpu`` instead measures the CPU time (``time.thread_time``, which waiting for a
core does not count) spent inside the hooks of PruneCallback and its aids, outside
the pruning event, as a share of the fit's CPU time: usable on a loaded machine.

    python benchmarks/bench_callback_overhead.py --hook-cpu --epochs 4 --steps 20
"""
import argparse
import json
import logging
import statistics
import tempfile
import time
import warnings

import numpy as np
import paddle
import paddle.nn as nn
from against import add_options, compare

from slim_callbacks.callbacks import BNScaleL1, PruneCallback, VisualDLLogger

warnings.filterwarnings("ignore")


class StepTimer(paddle.callbacks.Callback):
    """Intervals between consecutive ``on_train_batch_begin`` calls (a step plus every
    callback's per-step work) and the extra time of each epoch boundary (every
    callback's ``on_epoch_end``/``on_epoch_begin`` work), except the last epoch's end,
    where the pruning event happens."""

    def __init__(self):
        super().__init__()
        self.steps, self.boundaries, self._t, self._first = [], [], None, True

    def on_train_batch_begin(self, step, logs=None):
        now = time.perf_counter()
        if self._t is not None:
            (self.boundaries if step == 0 else self.steps).append(now - self._t)
        self._t = now


def run(variant, args, log_root):
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=args.scale, num_classes=10)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters(), weight_decay=1e-4),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    data = paddle.io.TensorDataset([
        paddle.to_tensor(rng.normal(size=(n, 3, args.size, args.size)).astype("float32")),
        paddle.to_tensor(rng.integers(0, 10, (n, 1)).astype("int64"))])
    timer = StepTimer()
    callbacks = [timer]
    if variant == "B":
        cb = PruneCallback(0.5, "slim", prune_epochs=[args.epochs - 1],
                           input_shape=[1, 3, args.size, args.size])
        callbacks += [cb, BNScaleL1(1e-4), VisualDLLogger(tempfile.mkdtemp(dir=log_root),
                                                          log_freq=args.log_freq, pruner=cb)]
    model.fit(data, epochs=args.epochs, batch_size=args.batch, verbose=0, shuffle=False,
              callbacks=callbacks)
    return timer.steps, timer.boundaries


def measure(args):
    """``(description, {variant: (median step, epoch-boundary extra, amortized)})``."""
    logging.getLogger("slim_callbacks").setLevel(logging.WARNING)
    steps = {"A": [], "B": []}
    bounds = {"A": [], "B": []}
    with tempfile.TemporaryDirectory() as log_root:
        run("A", args, log_root)  # warm-up
        for r in range(args.rounds):
            for variant in ("AB" if r % 2 == 0 else "BA"):
                s, b = run(variant, args, log_root)
                steps[variant].extend(s)
                bounds[variant].extend(b)
    cost = {}
    for v in "AB":
        step = statistics.median(steps[v])
        # a boundary interval is one step plus the epoch-boundary work
        extra = max(0.0, statistics.median(bounds[v]) - step)
        cost[v] = (step, extra, step + extra / args.steps)
    described = (f"MobileNetV1 x{args.scale} {args.size}x{args.size} batch {args.batch}, "
                 f"{args.steps} steps/epoch, {args.epochs} epochs x {args.rounds} fits per variant "
                 f"(ABBA interleaved), {len(steps['A'])} timed steps per variant")
    return described, cost


def hook_cpu(args):
    """CPU seconds inside the hooks of PruneCallback, BNScaleL1 and VisualDLLogger (not
    the event) and of the whole fit."""
    logging.getLogger("slim_callbacks").setLevel(logging.WARNING)
    spent = [0.0]

    def timed_hook(name, own):
        def hook(self, *a, **k):
            if name == "on_epoch_end" and a and a[0] == self.params["epochs"] - 1:
                return own(self, *a, **k)  # the pruning event
            start = time.thread_time()
            try:
                return own(self, *a, **k)
            finally:
                spent[0] += time.thread_time() - start
        return hook
    for name in ("on_train_batch_begin", "on_train_batch_end", "on_epoch_begin",
                 "on_epoch_end", "on_eval_begin", "on_eval_end"):
        for cls in (PruneCallback, BNScaleL1, VisualDLLogger):
            setattr(cls, name, timed_hook(name, getattr(cls, name)))
    with tempfile.TemporaryDirectory() as log_root:
        run("B", args, log_root)  # warm-up
        spent[0] = 0.0
        start = time.thread_time()
        run("B", args, log_root)
        total = time.thread_time() - start
    return {"hook cpu s": spent[0], "fit cpu s": total, "share": spent[0] / total}


def ratios(cost):
    return {"per-step ratio B/A": cost["B"][0] / cost["A"][0],
            "amortized ratio B/A": cost["B"][2] / cost["A"][2]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--log_freq", type=int, default=10)
    parser.add_argument("--hook-cpu", action="store_true", help="CPU time inside the hooks instead")
    add_options(parser, processes=2)
    args = parser.parse_args()
    if args.hook_cpu:
        print(json.dumps(hook_cpu(args)))
        return
    if args.worker:
        print(json.dumps(ratios(measure(args)[1])))
        return
    if args.against:
        passed = [f"--{k}={getattr(args, k)}" for k in
                  ("rounds", "epochs", "steps", "batch", "size", "scale", "log_freq")]
        results = compare(args.against, "bench_callback_overhead.py", passed, args.processes)
        print(f"| ratio | this | {args.against} |\n|---|---|---|")
        for key, r in results.items():
            print(f"| {key} | {r['this']:.4f} | {r['ref']:.4f} |")
        return
    described, cost = measure(args)
    print(described)
    for v, label in (("A", "plain fit"), ("B", "fit + Prune/BNL1/VisualDL")):
        step, extra, total = cost[v]
        print(f"{label:26s} step {step * 1e3:8.2f} ms (median), epoch boundary +{extra * 1e3:7.2f} ms,"
              f" amortized {total * 1e3:8.2f} ms/step")
    r = ratios(cost)
    print(f"per-step ratio B/A = {r['per-step ratio B/A']:.4f}; amortized ratio B/A = "
          f"{r['amortized ratio B/A']:.4f} (overhead {100 * (r['amortized ratio B/A'] - 1):+.2f}%)")


if __name__ == "__main__":
    main()
