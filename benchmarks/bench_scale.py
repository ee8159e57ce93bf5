"""Prune time and peak memory on a ladder of sizes: ``prune(net, [1, 3, 224, 224], 0.3)``.

    python benchmarks/bench_scale.py [--models ResNet-18 ViT-S ...]
    python benchmarks/bench_scale.py --against main --processes 1   # ratio to another ref

Each model runs in a fresh process (``ru_maxrss`` is a process's high-water mark). The
worker builds the model (ResNets from ``paddle.vision.models``, ViTs from
``benchmarks/vit.py``), counts its MACs, runs one forward pass that records gradients
(the memory of the weights plus one forward's activations, as a training step holds
them: ``base``), then times ``prune`` and reads the peak again. Reported per model:
parameters (M), weights (MB, float32), MACs (G), the peak RSS after the forward
(``base``) and while pruning (``peak``), (peak - base) over the weights, and the
prune seconds.
With ``--against REF`` each model runs in alternating processes on both trees, and each
column gives this tree's median / the ref's.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings

import paddle
from against import add_options, compare

SHAPE = [1, 3, 224, 224]
RESNETS = {"ResNet-18": "resnet18", "ResNet-50": "resnet50", "ResNet-101": "resnet101",
           "ResNet-152": "resnet152"}
LADDER = list(RESNETS) + ["ViT-S", "ViT-B", "ViT-L"]
# EVA-giant (benchmarks/vit.py) is on the ladder only when asked: --models EVA-giant


def peak_mb() -> float:
    """This process's peak RSS in MB (``ru_maxrss`` is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(name: str):
    if name in RESNETS:
        return getattr(paddle.vision.models, RESNETS[name])(num_classes=1000)
    from vit import vit
    return vit(name)


def measure(name: str) -> dict:
    warnings.filterwarnings("ignore")
    from slim_callbacks import count_flops, prune
    paddle.seed(0)
    net = build(name)
    params = sum(int(p.size) for p in net.parameters())
    built = peak_mb()
    macs = count_flops(net, SHAPE)
    x = paddle.randn(SHAPE)
    x.stop_gradient = False
    out = net(x)  # every activation a backward pass would need stays alive
    base = peak_mb()
    del out, x
    start = time.perf_counter()
    prune(net, SHAPE, 0.3)
    seconds = time.perf_counter() - start
    peak = peak_mb()
    weights = params * 4 / 2**20
    return {"params_m": params / 1e6, "weights_mb": weights, "gmacs": macs / 1e9,
            "built_mb": built, "base_mb": base, "peak_mb": peak,
            "extra_over_weights": (peak - base) / weights, "prune_s": seconds}


def run_fresh(name: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--worker", "--models", name],
                          capture_output=True, text=True, check=False,
                          env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")))
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=LADDER)
    add_options(parser, processes=1)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.models[0])))
        return
    print(f"load: {os.getloadavg()}", file=sys.stderr)
    if args.against:
        ref = args.against
        print(f"| model | weights (MB) | base RSS (MB) this / {ref} | peak RSS (MB) this / {ref} | "
              f"(peak - base) / weights this / {ref} | prune (s) this / {ref} | time ratio |\n"
              f"|---|---|---|---|---|---|---|")
        for name in args.models:
            r = compare(ref, "bench_scale.py", ["--models", name], args.processes)
            pair = lambda key, f: f"{r[key]['this']:{f}} / {r[key]['ref']:{f}}"  # noqa: E731
            print(f"| {name} | {r['weights_mb']['this']:.0f} | {pair('base_mb', '.0f')} | "
                  f"{pair('peak_mb', '.0f')} | {pair('extra_over_weights', '.2f')} | "
                  f"{pair('prune_s', '.2f')} | {r['prune_s']['ratio']:.3f} |", flush=True)
        return
    print("| model | params (M) | weights (MB) | GMACs | base RSS (MB) | peak RSS (MB) | "
          "(peak - base) / weights | prune (s) | s per GMAC |\n|---|---|---|---|---|---|---|---|---|")
    for name in args.models:
        r = run_fresh(name)
        if "error" in r:
            print(f"| {name} | failed: {r['error']} |", flush=True)
            continue
        print(f"| {name} | {r['params_m']:.1f} | {r['weights_mb']:.0f} | {r['gmacs']:.2f} | "
              f"{r['base_mb']:.0f} | {r['peak_mb']:.0f} | {r['extra_over_weights']:.2f} | "
              f"{r['prune_s']:.2f} | {r['prune_s'] / r['gmacs']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
