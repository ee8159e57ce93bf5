"""slim_callbacks.paddleslim against PaddleSlim 2.6.0: ``flops()`` and the channels
``prune_vars`` keeps, on the same weights.

For each model (paddle.vision, random weights saved to a temporary ``.pdparams``, names
from a fresh ``unique_name.guard()``) it counts ``flops(net, [1, 3, S, S])`` with
``only_conv`` True and False, and plans ``prune_vars(ratios, 0, apply=None)`` with
``L1NormFilterPruner`` and ``FPGMFilterPruner`` for a ratio on every conv weight that
PaddleSlim would prune (MobileNet: the pointwise convs; ResNet: every conv), then
compares the output channels each keeps, per weight. PaddleSlim runs in its own
virtual environment (``--paddleslim-python``, see ``bench_sensitivity.py``) through
``paddleslim_parity.py``.

    python benchmarks/bench_paddleslim_parity.py --paddleslim-python /tmp/pslim_venv/bin/python
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import paddle

from slim_callbacks.paddleslim import FPGMFilterPruner, L1NormFilterPruner, flops

PRUNERS = {"l1_norm": L1NormFilterPruner, "fpgm": FPGMFilterPruner}
MODELS = ("mobilenet_v1", "mobilenet_v2", "resnet18", "resnet50")


def build(name):
    with paddle.utils.unique_name.guard():
        return getattr(paddle.vision.models, name)()


def conv_ratios(net, ratio):
    """A ratio for each conv weight that is not depthwise, and not the last of a net."""
    convs = [layer for layer in net.sublayers() if isinstance(layer, paddle.nn.Conv2D)
             and layer._groups == 1]
    return {layer.weight.name: ratio for layer in convs[:-1]}


def ours(net, shape, ratios):
    result = {"flops": flops(net, shape), "flops_all": flops(net, shape, only_conv=False), "masks": {}}
    for criterion, pruner in PRUNERS.items():
        plan = pruner(net, shape).prune_vars(ratios, 0, apply=None)
        result["masks"][criterion] = {
            var: [int(i) for i, keep in enumerate(masks[0].mask) if keep]
            for var, masks in plan.masks.items() if masks[0].dims == 0 and var.endswith(".w_0")}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paddleslim-python", required=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--ratio", type=float, default=0.3125)
    args = parser.parse_args()
    shape = [1, 3, args.size, args.size]
    mine, spec = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            paddle.seed(0)
            net = build(name)
            net.eval()
            params = os.path.join(tmp, f"{name}.pdparams")
            paddle.save(net.state_dict(), params)
            ratios = conv_ratios(net, args.ratio)
            spec[name] = {"params": params, "ratios": ratios}
            mine[name] = ours(net, shape, ratios)
        with open(os.path.join(tmp, "spec.json"), "w") as f:
            json.dump(spec, f)
        out = os.path.join(tmp, "paddleslim.json")
        subprocess.run([args.paddleslim_python, os.path.join(os.path.dirname(__file__), "paddleslim_parity.py"),
                        "--spec", f.name, "--size", str(args.size), "--out", out], check=True)
        theirs = json.load(open(out))
    print("| model | flops (only_conv) | flops (all) | equal (PaddleSlim's) | L1 masks equal | FPGM masks equal |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        a, b = mine[name], theirs[name]
        same = {c: sum(a["masks"][c].get(v) == k for v, k in b["masks"][c].items()) for c in PRUNERS}
        total = {c: len(b["masks"][c]) for c in PRUNERS}
        print(f"| {name} | {a['flops']:,} | {a['flops_all']:,} | "
              f"{a['flops'] == b['flops'] and a['flops_all'] == b['flops_all']} "
              f"({b['flops']:,} / {b['flops_all']:,}) | "
              f"{same['l1_norm']}/{total['l1_norm']} | {same['fpgm']}/{total['fpgm']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
