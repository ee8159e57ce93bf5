"""Can a network known only by its export be rebuilt and pruned? Every paddle.vision model.

    nice python benchmarks/bench_from_export.py [--models NAME ...] [--ratio 0.3]
        [--timeout 600] [--out output/bench_from_export]
    nice python benchmarks/bench_from_export.py --paddleclas [--families F ...] [--size 64]

Each network of ``paddle.vision.models`` (random weights, tiny width multipliers where
the constructor has one, the smallest input it allows, batch 1) is exported with
``paddle.jit.save`` and from then on treated as program-only. ``--paddleclas`` takes
the PaddleClas backbones ``bench_zoo.py`` builds instead (one per family, random
weights), at ``--size`` pixels where the Python network runs, exports and prunes at that size, else at
the size ``bench_zoo`` uses. Per model, in its own process with a timeout:

- **rebuilt exact**: ``load_inference_model`` (which checks the rebuilt network against
  Paddle Inference on the exported files), then the largest output difference to the
  Python network on another batch;
- **same widths**: ``prune(net, shape, ratio)`` on the Python network and on the
  rebuilt one give every conv and Linear the same width (layers matched by their
  weight's parameter name, which the export keeps), and the pruned networks give the
  same outputs (the same channels were kept); where they differ, whether the rebuilt
  network's own prune is exact (the channels it removes zeroed first: outputs unchanged);
- **fidelity**: top-1 agreement of the pruned rebuild with the unpruned one on held-out
  crops of bundled photos, before and after ``--epochs`` label-free fine-tune epochs
  (:mod:`export_fidelity`), and how many classes the unpruned network predicts there;
- **pruned export verified**: ``export`` of the pruned rebuilt network (Paddle
  Inference, outputs checked);
- the MACs cut and the rebuild and prune times.

Writes ``from_export.json`` and ``from_export.md`` to ``--out``.
"""
import argparse
import json
import logging
import os
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_zoo  # noqa: E402
from bench_zoo import child_row  # noqa: E402
from export_fidelity import fine_tuned_fidelity  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
# name -> (family, constructor arguments, input size)
MODELS = {
    "LeNet": ("LeNet", {"num_classes": 10}, 28),
    "alexnet": ("AlexNet", {"num_classes": 10}, 224),
    "vgg11": ("VGG", {"num_classes": 10}, 32),
    "resnet18": ("ResNet", {"num_classes": 10}, 32),
    "resnet50": ("ResNet", {"num_classes": 10}, 32),
    "resnext50_32x4d": ("ResNeXt", {"num_classes": 10}, 32),
    "wide_resnet50_2": ("WideResNet", {"num_classes": 10}, 32),
    "mobilenet_v1": ("MobileNetV1", {"scale": 0.25, "num_classes": 10}, 32),
    "mobilenet_v2": ("MobileNetV2", {"scale": 0.25, "num_classes": 10}, 32),
    "mobilenet_v3_small": ("MobileNetV3", {"scale": 0.35, "num_classes": 10}, 32),
    "mobilenet_v3_large": ("MobileNetV3", {"scale": 0.35, "num_classes": 10}, 32),
    "shufflenet_v2_x0_25": ("ShuffleNetV2", {"num_classes": 10}, 32),
    "shufflenet_v2_swish": ("ShuffleNetV2", {"num_classes": 10}, 32),
    "squeezenet1_0": ("SqueezeNet", {"num_classes": 10}, 64),
    "squeezenet1_1": ("SqueezeNet", {"num_classes": 10}, 64),
    "densenet121": ("DenseNet", {"num_classes": 10}, 32),
    "googlenet": ("GoogLeNet", {"num_classes": 10}, 224),
    "inception_v3": ("InceptionV3", {"num_classes": 10}, 96),
}
EXACT = 1e-4  # of the output scale


# ------------------------------------------------------------------ pure helpers
def summary(rows) -> dict:
    """Counts per column, over models and over families (a family passes a column
    when every model of it does)."""
    def share(key):
        families = {}
        for r in rows:
            families[r["family"]] = families.get(r["family"], True) and bool(r.get(key))
        return {"models": sum(bool(r.get(key)) for r in rows), "families": sum(families.values())}
    return {"models": len(rows), "families": len({r["family"] for r in rows}),
            **{key: share(key) for key in ("rebuilt_exact", "same_widths", "export_verified")},
            "failed": [(r["model"], r.get("error", "")) for r in rows if r.get("status") != "ok"]}


def format_table(rows) -> str:
    lines = ["| family | model | input | ops | rebuilt exact (max diff) | prune 0.3: same widths "
             "(max diff to the Python prune) | MACs cut | pruned export verified | rebuild s "
             "| prune s | top-1 agreement: pruned / fine-tuned (classes the original predicts) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['family']} | {r['model']} | {r.get('input', '')} | | "
                         f"{r.get('status')}: {r.get('error', '')[:90]} | | | | | | |")
            continue
        lines.append(
            f"| {r['family']} | {r['model']} | {r['input']} | {r['ops']} | "
            f"{_yes(r['rebuilt_exact'])} ({r['rebuilt_diff']:.1e}) | "
            f"{_widths(r)} | {r['macs_cut']:.1%} | "
            f"{_yes(r['export_verified'])} | {r['rebuild_s']:.1f} | {r['prune_s']:.1f} | "
            f"{_agreement(r)} |")
    return "\n".join(lines)


def _widths(row) -> str:
    if row["same_widths"] or "dead_channels_exact" not in row:
        return f"{_yes(row['same_widths'])} ({row['pruned_diff']:.1e})"
    return (f"NO: {len(row['width_mismatches'])} layers differ; its own prune "
            f"{'exact' if row['dead_channels_exact'] else 'NOT exact'} "
            f"({row['dead_channels_diff']:.1e})")


def _agreement(row) -> str:
    if row.get("fidelity_tuned") is None:
        return "-"
    return (f"{row['fidelity_pruned']:.0%} / {row['fidelity_tuned']:.0%} "
            f"({row['teacher_classes']} classes)")


def _yes(flag) -> str:
    return "yes" if flag else "NO"


# ------------------------------------------------------------------ one model
def build_vision(name: str):
    """``(network, input shape, family)`` of a ``paddle.vision.models`` network."""
    import paddle
    family, arguments, size = MODELS[name]
    paddle.seed(0)
    net = getattr(paddle.vision.models, name)(**arguments)
    return net, [1, 1 if name == "LeNet" else 3, size, size], family


def build_paddleclas(name: str, size: int):
    """``(network, input shape, family)`` of a PaddleClas backbone as ``bench_zoo``
    builds it, at ``size`` pixels if its eval forward runs there, else at the zoo's size."""
    import paddle
    backbones = bench_zoo.import_backbones()
    paddle.seed(0)
    net = bench_zoo.BUILT_DIRECTLY[name]() if name in bench_zoo.BUILT_DIRECTLY else \
        bench_zoo.build(getattr(backbones, name), bench_zoo.REQUIRED_ARGUMENTS.get(name, {}))
    family = bench_zoo.family_of(name)
    bench_zoo.tame_random_weights(net, family)
    native = bench_zoo.input_size_of(name)
    for side in dict.fromkeys([min(size, native), native]):
        try:
            net.eval()
            with paddle.no_grad():
                net(paddle.randn([1, 3, side, side]))
            break
        except Exception:  # noqa: BLE001 - this size does not fit the network
            continue
    return net, [1, 3, side, side], family


def measure_one(name: str, ratio: float, size: int = 0, epochs: int = 1) -> dict:
    """Exports, rebuilds, prunes both, fine-tunes the pruned rebuild for ``epochs`` and
    exports it (this process); ``size`` > 0: ``name`` is a PaddleClas backbone tried at
    that size."""
    import copy

    import numpy as np
    import paddle

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    from helpers import calibrate, outputs

    from slim_callbacks import count_flops, export, load_inference_model, prune
    from slim_callbacks.deploy.runtime import save_inference_model

    net, shape, family = build_paddleclas(name, size) if size else build_vision(name)
    row = {"model": name, "family": family, "input": shape[-1]}
    calibrate(net, shape)
    workdir = tempfile.mkdtemp(prefix="from-export-")
    prefix = os.path.join(workdir, "model")
    save_inference_model(net, prefix, shape, dynamic_batch=True)  # as PaddleClas exports
    start = time.perf_counter()
    rebuilt = load_inference_model(prefix)  # checked against Paddle Inference
    row["rebuild_s"] = time.perf_counter() - start
    row["ops"] = len(rebuilt.steps)
    x = paddle.randn([1] + shape[1:])
    expected = outputs(net, x)
    scale = max(1.0, float(np.abs(expected).max()))
    row["rebuilt_diff"] = float(np.abs(outputs(rebuilt, x) - expected).max())
    row["rebuilt_exact"] = row["rebuilt_diff"] <= EXACT * scale
    row["macs"] = count_flops(rebuilt, shape)
    teacher = copy.deepcopy(rebuilt) if epochs else None

    names = {id(layer): layer.weight.name for layer in net.sublayers() if _has_width(layer)}
    prune(net, shape, ratio)
    start = time.perf_counter()
    prune(rebuilt, shape, ratio)
    row["prune_s"] = time.perf_counter() - start
    python_widths = {names[id(layer)]: _width(layer) for layer in net.sublayers()
                     if id(layer) in names}
    rebuilt_widths = {rebuilt.weight_names[name]: _width(layer)
                      for name, layer in rebuilt.named_children() if _has_width(layer)}
    row["width_mismatches"] = sorted(k for k in python_widths if k in rebuilt_widths
                                     and python_widths[k] != rebuilt_widths[k])  # in eval: unfused
    row["pruned_diff"] = float(np.abs(outputs(rebuilt, x) - outputs(net, x)).max())
    row["same_widths"] = not row["width_mismatches"] and row["pruned_diff"] <= EXACT * scale
    if not row["same_widths"]:  # pruned otherwise than the Python code: is that exact?
        row["dead_channels_diff"] = dead_channels_diff(prefix, shape, ratio)
        row["dead_channels_exact"] = row["dead_channels_diff"] <= EXACT * scale
    row["macs_cut"] = 1 - count_flops(rebuilt, shape) / row["macs"]
    if epochs:
        row.update(fine_tuned_fidelity(rebuilt, teacher, shape, epochs))
    try:
        export(rebuilt, os.path.join(workdir, "pruned"), shape)
        row["export_verified"] = True
    except Exception as err:  # the row says why
        row["export_verified"], row["export_error"] = False, str(err)[:200]
    row["status"] = "ok"
    return row


def dead_channels_diff(prefix: str, shape, ratio: float) -> float:
    """The largest output change when a fresh rebuild of ``prefix`` is pruned at
    ``ratio`` after the channels the prune removes were zeroed (0: the prune is exact)."""
    import numpy as np
    import paddle
    from helpers import kill_units, outputs

    from slim_callbacks import load_inference_model, prune, trace
    net = load_inference_model(prefix, verify=False)
    kill_units(net, trace(net, shape), ratio=ratio)
    x = paddle.randn(shape)
    before = outputs(net, x)
    prune(net, shape, ratio)
    return float(np.abs(outputs(net, x) - before).max())


def _has_width(layer) -> bool:
    import paddle
    return isinstance(layer, (paddle.nn.Conv2D, paddle.nn.Conv2DTranspose, paddle.nn.Linear))


def _width(layer) -> int:
    import paddle
    return int(layer.weight.shape[1 if isinstance(layer, paddle.nn.Linear) else 0])


def run_isolated(name: str, ratio: float, timeout: float, size: int = 0, epochs: int = 1) -> dict:
    """:func:`measure_one` in a child process, so a crash or a hang costs one row."""
    family, _, side = MODELS[name] if not size else (bench_zoo.family_of(name), 0, size)
    base = {"model": name, "family": family, "input": side}
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--ratio", str(ratio)]
    cmd += ["--paddleclas", "--size", str(size)] if size else []
    cmd += ["--epochs", str(epochs)]
    return child_row(cmd, base, timeout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="these models (default: all)")
    parser.add_argument("--paddleclas", action="store_true",
                        help="PaddleClas backbones (one per family, as bench_zoo picks them)")
    parser.add_argument("--families", nargs="*", help="with --paddleclas: only these families")
    parser.add_argument("--size", type=int, default=64,
                        help="with --paddleclas: input pixels where the network runs at them")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=600, help="seconds per model")
    parser.add_argument("--out", default=os.path.join("output", "bench_from_export"))
    parser.add_argument("--epochs", type=int, default=1,
                        help="label-free fine-tune epochs before the fidelity (0: none)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    size = args.size if args.paddleclas else 0
    if args.one:
        try:
            try:
                row = measure_one(args.one, args.ratio, size, args.epochs)
            except Exception:  # noqa: BLE001 - not at this size: at the zoo's own
                native = bench_zoo.input_size_of(args.one) if size else 0
                if not size or native <= size:
                    raise
                row = measure_one(args.one, args.ratio, native, args.epochs)
        except Exception as err:  # noqa: BLE001 - the row says why, on one line
            family = bench_zoo.family_of(args.one) if size else MODELS[args.one][0]
            row = {"model": args.one, "family": family, "input": size, "status": "error",
                   "error": f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"}
        print(json.dumps(row))
        return
    names = args.models or (bench_zoo.pick_models(bench_zoo.backbone_names(
        bench_zoo.import_backbones()), args.families) if size else list(MODELS))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in names:
        start = time.perf_counter()
        rows.append(run_isolated(name, args.ratio, args.timeout, size, args.epochs))
        r = rows[-1]
        print(f"{name}: {r.get('status')} exact={r.get('rebuilt_exact')} "
              f"widths={r.get('same_widths')} export={r.get('export_verified')} "
              f"({time.perf_counter() - start:.0f} s) {r.get('error', '')}", flush=True)
        with open(os.path.join(args.out, "from_export.json"), "w") as f:
            json.dump({"ratio": args.ratio, "rows": rows, "summary": summary(rows)}, f, indent=1)
    with open(os.path.join(args.out, "from_export.md"), "w") as f:
        f.write(format_table(rows) + "\n")
    print(format_table(rows))
    print(json.dumps(summary(rows), indent=1))


if __name__ == "__main__":
    main()
