"""PaddleSlim 2.6.0's ``flops()`` and ``prune_vars(..., apply=None)`` masks, as JSON.

Runs in PaddleSlim's own virtual environment (see ``bench_sensitivity.py`` for how to
make it; the patches are ``paddleslim_sensitive.py``'s) and never imports
slim_callbacks. ``bench_paddleslim_parity.py --paddleslim-python`` calls it with the
same weights and reads what it writes: ``{model: {"flops": n, "flops_all": n,
"masks": {criterion: {parameter name: kept indices}}}}``.
"""
import os

os.environ.setdefault("FLAGS_enable_pir_api", "0")  # before paddle is imported

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

warnings.filterwarnings("ignore")
_base = paddle.base.dygraph.base
if not hasattr(_base, "_to_static_mode_guard_"):
    _base._to_static_mode_guard_ = _base.to_static_mode_guard

from paddleslim import flops  # noqa: E402
from paddleslim.dygraph import FPGMFilterPruner, L1NormFilterPruner  # noqa: E402

PRUNERS = {"l1_norm": L1NormFilterPruner, "fpgm": FPGMFilterPruner}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON: {model: {params, ratios}}")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    shape = [1, 3, args.size, args.size]
    out = {}
    for name, job in json.load(open(args.spec)).items():
        with paddle.utils.unique_name.guard():
            net = getattr(paddle.vision.models, name)()
        net.set_state_dict(paddle.load(job["params"]))
        net.eval()
        result = {"flops": int(flops(net, shape)), "flops_all": int(flops(net, shape, only_conv=False)),
                  "masks": {}}
        for criterion, pruner in PRUNERS.items():
            plan = pruner(net, shape).prune_vars(job["ratios"], 0, apply=None)
            result["masks"][criterion] = {
                var: np.flatnonzero(np.asarray(masks[0].mask)).tolist()
                for var, masks in plan.masks.items() if masks[0].dims == 0 and var.endswith(".w_0")}
        out[name] = result
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
