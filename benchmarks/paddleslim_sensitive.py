"""PaddleSlim 2.6.0's dygraph ``L1NormFilterPruner.sensitive()`` on MobileNetV1, timed.

Runs in PaddleSlim's own virtual environment (see ``bench_sensitivity.py`` for how to
make it) and never imports slim_callbacks. ``bench_sensitivity.py --paddleslim-python``
calls it in a subprocess with the same weights (a ``.pdparams`` file), the same eval
batches (an ``.npz`` with ``x`` [batches, n, 3, H, W] float32 and ``y`` [batches, n, 1]
int64) and the same layers, and reads the JSON it writes:

    {"seconds": time of pruner construction (graph tracing) + sensitive(),
     "sensitive_seconds": sensitive() alone, "base": base metric,
     "losses": {layer: {ratio: loss}}}

Losses are converted to ``(base - metric) / |base|``: PaddleSlim divides by
``base + 1e-3`` instead (``_cal_sensitive``), the raw values are under "raw_losses".
PaddleSlim's ratios are fixed: 0.1, 0.2, ..., 0.9.

PaddleSlim 2.6.0 on Paddle 3.3.1 needs (all done here):
- ``FLAGS_enable_pir_api=0`` in the environment before ``import paddle``;
- numpy < 2 (``np.product``) and the undeclared packages six, requests, decorator;
- ``paddle.base.dygraph.base._to_static_mode_guard_``, which Paddle 3 renamed to
  ``to_static_mode_guard`` (same signature, ``is_to_static=True``): aliased below.
"""
import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")  # before paddle is imported

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.nn as nn  # noqa: E402

warnings.filterwarnings("ignore")
_base = paddle.base.dygraph.base
if not hasattr(_base, "_to_static_mode_guard_"):
    _base._to_static_mode_guard_ = _base.to_static_mode_guard

from paddleslim.dygraph import L1NormFilterPruner  # noqa: E402

RATIOS = [round(0.1 * k, 1) for k in range(1, 10)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", required=True, help=".pdparams of MobileNetV1")
    parser.add_argument("--data", required=True, help=".npz with x and y")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--layers", nargs="+", required=True,
                        help="structural names of the convs, e.g. conv2_1._pointwise_conv.0")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()
    logging.getLogger("paddleslim").setLevel(logging.WARNING)
    for name in list(logging.root.manager.loggerDict):
        if "paddleslim" in name or "filter_pruner" in name:
            logging.getLogger(name).setLevel(logging.WARNING)

    paddle.disable_static()
    net = paddle.vision.models.mobilenet_v1(scale=args.scale, num_classes=args.num_classes)
    net.set_state_dict(paddle.load(args.params))
    net.eval()
    data = np.load(args.data)
    batches = [(paddle.to_tensor(x), paddle.to_tensor(y)) for x, y in zip(data["x"], data["y"])]
    size = int(data["x"].shape[-1])
    param_of = {name: p.name for name, p in net.named_parameters()}
    targets = [param_of[f"{layer}.weight"] for layer in args.layers]

    def eval_func():
        net.eval()
        with paddle.no_grad():
            return -sum(float(nn.functional.cross_entropy(net(x), y)) for x, y in batches) / len(batches)

    base = eval_func()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        pruner = L1NormFilterPruner(net, [1, 3, size, size])
        t1 = time.perf_counter()
        sens = pruner.sensitive(eval_func=eval_func, sen_file=os.path.join(tmp, "sen.pickle"),
                                target_vars=targets, skip_vars=[])
        t2 = time.perf_counter()
    layer_of = dict(zip(targets, args.layers))
    raw = {layer_of[var]: {float(r): float(v) for r, v in losses.items()}
           for var, losses in sens.items() if var in layer_of}
    missing = [layer for layer in args.layers if layer not in raw]
    if missing:
        raise SystemExit(f"PaddleSlim computed no sensitivity for {missing} "
                         f"(got {sorted(sens)[:5]}...)")
    losses = {layer: {r: v * (base + 1e-3) / abs(base) for r, v in per.items()} for layer, per in raw.items()}
    result = {"seconds": t2 - t0, "sensitive_seconds": t2 - t1, "base": base, "paddle": paddle.__version__,
              "numpy": np.__version__, "losses": losses, "raw_losses": raw}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
