"""Batch-1 latency of MobileNetV1-224 in Paddle Inference, unpruned vs pruned (#10, first part).

    python benchmarks/bench_deploy.py [--ratio 0.5] [--threads 1] [--rounds 20] [--no-onednn]

Prunes a copy uniformly with L1Norm, exports both with ``save_inference_model`` and times
them side by side with ``measure_latency`` (interleaved rounds). Prints the MACs ratio (the
physical limit of the speedup) beside the measured speedup.
"""
import argparse
import copy
import os
import tempfile

import paddle

from slim_callbacks import count_flops, prune
from slim_callbacks.deploy.latency import format_latency_table, measure_latency
from slim_callbacks.deploy.runtime import save_inference_model

SHAPE = [1, 3, 224, 224]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-onednn", action="store_true")
    args = parser.parse_args()
    paddle.seed(0)
    original = paddle.vision.models.mobilenet_v1(num_classes=1000)
    pruned = copy.deepcopy(original)
    prune(pruned, SHAPE, args.ratio)
    macs = count_flops(original, SHAPE), count_flops(pruned, SHAPE)
    out = tempfile.mkdtemp(prefix="bench_deploy_")
    prefixes = {}
    for name, net in (("original", original), (f"pruned_{args.ratio}", pruned)):
        prefixes[name] = os.path.join(out, name, "model")
        save_inference_model(net, prefixes[name], SHAPE)
    results = measure_latency(prefixes, threads=args.threads, onednn=not args.no_onednn,
                              rounds=args.rounds)
    print(format_latency_table(results))
    print(f"MACs {macs[0]:,} -> {macs[1]:,} ({1 - macs[1] / macs[0]:.2%} fewer); "
          f"MACs ratio {macs[0] / macs[1]:.2f}x, measured speedup "
          f"{results[0].median_ms / results[1].median_ms:.2f}x "
          f"({results[0].median_ms / results[1].median_ms / (macs[0] / macs[1]):.0%} of the MACs ratio)")


if __name__ == "__main__":
    main()
