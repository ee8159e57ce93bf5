"""When is a batch-1 latency framework overhead? MobileNetV1 (x0.25 and x1.0) at several
input sizes, unpruned and with its 13 pointwise convs at -50% MACs (uniform L1), timed
side by side in Paddle Inference (oneDNN, 1 thread), and a one-op model (the floor).

    OMP_NUM_THREADS=1 python benchmarks/bench_overhead.py [--clock thread] [--rounds 40]

``--clock thread`` times the CPU time of the calling thread (``time.thread_time``)
instead of the wall clock: waiting for a core on a busy machine does not count (the
predictor runs in the calling thread at 1 thread; the work of other threads, such as
Paddle's garbage collector, is not counted either).
"""
import argparse
import os
import tempfile
import time

import paddle
from paddle.vision.models import mobilenet_v1

import slim_callbacks.latency.measure as latency
from slim_callbacks import count_flops, prune
from slim_callbacks.analysis.uniform_strategy import uniform_ratio
from slim_callbacks.deploy.runtime import save_inference_model

LAYERS = ["conv*._pointwise_conv*"]


def export_pair(out: str, scale: float, size: int):
    """The unpruned and the -50% MACs network, exported; their prefixes and MACs."""
    paddle.seed(0)
    shape = [1, 3, size, size]
    net = mobilenet_v1(scale=scale, num_classes=10)
    before = count_flops(net, shape)
    tag = os.path.join(out, f"x{scale}_{size}")
    save_inference_model(net, tag + "_original", shape)
    ratio = uniform_ratio(net, shape, 0.5, layers=LAYERS)
    prune(net, shape, {pattern: ratio for pattern in LAYERS})
    save_inference_model(net, tag + "_pruned", shape)
    return tag, before, count_flops(net, shape)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall")
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    if args.clock == "thread":
        latency._clock = time.thread_time
    out = tempfile.mkdtemp(prefix="bench-overhead-")
    pairs = [export_pair(out, scale, size) for scale in (0.25, 1.0) for size in (32, 64, 128, 224)]
    print("| network | MACs original -> pruned | original ms (p25-p75) | pruned ms (p25-p75) | speedup |")
    print("|---|---|---|---|---|")
    for tag, before, after in pairs:
        b, a = latency.measure_latency({"original": tag + "_original", "pruned": tag + "_pruned"},
                                       threads=1, onednn=True, rounds=args.rounds)
        print(f"| MobileNetV1 {os.path.basename(tag).replace('_', ' at ')} | {before / 1e6:.2f}M -> "
              f"{after / 1e6:.2f}M | {b.median_ms:.3f} ({b.p25_ms:.3f}-{b.p75_ms:.3f}) | "
              f"{a.median_ms:.3f} ({a.p25_ms:.3f}-{a.p75_ms:.3f}) | {b.median_ms / a.median_ms:.2f}x |",
              flush=True)
    floor = os.path.join(out, "one_op")
    save_inference_model(paddle.nn.Conv2D(3, 8, 1), floor, [1, 3, 32, 32])
    one = latency.measure_latency({"one op": floor}, threads=1, onednn=True, rounds=args.rounds)[0]
    print(f"one 1x1 conv (3 -> 8 channels at 32x32): {one.median_ms:.3f} ms "
          f"({one.p25_ms:.3f}-{one.p75_ms:.3f})")


if __name__ == "__main__":
    main()
