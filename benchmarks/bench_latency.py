"""Is the pruned network really smaller and faster? MobileNetV1 before and after pruning.

    python benchmarks/bench_latency.py [--rounds 7] [--batch 1 8]

(Paddle runs one thread unless OMP_NUM_THREADS says otherwise.)

Prunes MobileNetV1 x1.0 (224x224, 1000 classes) as the seed table's -50% FLOPs rows do
(the 13 pointwise convs at the uniform ratio 0.3125, L1 norm) and, for a second point,
at -30% (the ratio a bisection on FLOPs 0.3 gives), in place with
``slim_callbacks.prune``. For each network it reports MACs, parameters, the size of the
``.pdparams`` file ``paddle.save`` writes (no full-size backups: the pruned tensors are
really smaller), and the CPU forward latency in eval mode under ``paddle.no_grad``.
Latencies are medians over ``--rounds`` interleaved rounds (original, pruned, pruned,
original, ...), each round timing 10 forwards after 2 warm-up ones, so load from other
processes affects both alike; the speedup is the ratio of the two medians.

The seed's latency column was measured with PaddleLite on an ARM phone; this is
Paddle's own CPU kernels on x86, so the ratios answer "does pruning pay off here", not
"do we reproduce that column".
"""
import argparse
import logging
import os
import statistics
import tempfile
import time
import warnings

import paddle

from slim_callbacks import count_flops, prune
from slim_callbacks.analysis.flops import count_params
from slim_callbacks.analysis.uniform_strategy import uniform_ratio

SHAPE = [1, 3, 224, 224]
POINTWISE = "conv*._pointwise_conv*"


def network():
    paddle.seed(0)
    net = paddle.vision.models.mobilenet_v1(scale=1.0, num_classes=1000)
    net.eval()
    return net


def file_mb(net) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "net.pdparams")
        paddle.save(net.state_dict(), path)
        return os.path.getsize(path) / 2 ** 20


def forward_seconds(net, x, calls=10, warmup=2) -> float:
    with paddle.no_grad():
        for _ in range(warmup):
            net(x)
        start = time.perf_counter()
        for _ in range(calls):
            net(x)
    return (time.perf_counter() - start) / calls


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("slim_callbacks").setLevel(logging.WARNING)

    nets = {"original": network()}
    for target in (0.3, 0.5):
        ratio = uniform_ratio(network(), SHAPE, target, layers=[POINTWISE])
        net = network()
        prune(net, SHAPE, {POINTWISE: ratio}, criterion="l1_norm")
        nets[f"-{target:.0%} FLOPs (ratio {ratio:g})"] = net
    base_macs = count_flops(nets["original"], SHAPE)
    print(f"paddle {paddle.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"{args.rounds} rounds\n")
    print("| network | MACs | MACs change | params | .pdparams MB |")
    print("|---|---|---|---|---|")
    for name, net in nets.items():
        macs = count_flops(net, SHAPE)
        print(f"| {name} | {macs:,} | {macs / base_macs - 1:+.2%} | {count_params(net):,} "
              f"| {file_mb(net):.2f} |")

    for batch in args.batch:
        x = paddle.randn([batch] + SHAPE[1:])
        times = {name: [] for name in nets}
        order = list(nets)
        for r in range(args.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                times[name].append(forward_seconds(nets[name], x))
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"\nbatch {batch}: | network | ms per forward (median) | speedup |")
        print("|---|---|---|")
        for name in nets:
            print(f"| {name} | {1000 * med[name]:.1f} | {med['original'] / med[name]:.2f}x |")


if __name__ == "__main__":
    main()
