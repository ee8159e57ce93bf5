"""Which grouped-conv structure keeps the most accuracy? positions vs channels vs groups.

    nice python benchmarks/bench_grouped_modes.py [--seeds 0 1 2] [--ratio 0.5] [--all]
        [--epochs 12] [--finetune 2] [--out output/bench_grouped_modes.json]

A small ResNeXt (stem, three blocks with grouped 3x3 convs of 8 groups, 16x16 input) is
trained on scikit-learn's bundled digits (80/20 split, Momentum), then pruned one-shot
at ``--ratio`` (L1) with each ``grouped_conv`` structure from the same trained weights,
only the channels around the grouped convs (their inputs and outputs: :data:`AROUND`;
``--all``: every group): accuracy right after the prune (no fine-tuning), after ``--finetune`` epochs,
and the MACs cut. Means over the seeds; one JSON line per run. Not part of the test
suite; about a minute per seed on one core.
"""
import argparse
import copy
import json
import os
import statistics
import sys

import numpy as np
import paddle
import paddle.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

from slim_callbacks import count_flops, prune  # noqa: E402
from slim_callbacks.analysis.bn_recalibration import recalibrate_bn  # noqa: E402
from slim_callbacks.app.array_data import digits_datasets  # noqa: E402
from slim_callbacks.app.schema import DataConfig  # noqa: E402

SHAPE = [1, 1, 16, 16]
MODES = ("positions", "channels", "groups")
AROUND = ("blocks.*.body.0.0", "blocks.*.body.1.0")  # producers of a grouped conv's input, output


def conv_bn(c_in, c_out, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2D(c_in, c_out, k, stride, k // 2, groups=groups, bias_attr=False),
                         nn.BatchNorm2D(c_out), nn.ReLU())


class Block(nn.Layer):
    def __init__(self, c_in, width, c_out, groups, stride=1):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, width, 1), conv_bn(width, width, 3, stride, groups),
                                  nn.Conv2D(width, c_out, 1, bias_attr=False), nn.BatchNorm2D(c_out))
        self.short = (nn.Sequential(nn.Conv2D(c_in, c_out, 1, stride, bias_attr=False), nn.BatchNorm2D(c_out))
                      if stride != 1 or c_in != c_out else None)

    def forward(self, x):
        return nn.functional.relu((x if self.short is None else self.short(x)) + self.body(x))


class SmallResNeXt(nn.Layer):
    def __init__(self, classes=10):
        super().__init__()
        self.stem = conv_bn(1, 32)
        self.blocks = nn.Sequential(Block(32, 64, 64, 8), Block(64, 64, 64, 8), Block(64, 128, 128, 8, 2))
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(axis=[2, 3]))


def batches(data, size, rng=None):
    order = np.arange(len(data.labels)) if rng is None else rng.permutation(len(data.labels))
    for i in range(0, len(order), size):
        idx = order[i:i + size]
        yield paddle.to_tensor(data.images[idx]), paddle.to_tensor(data.labels[idx])


def train(net, data, epochs, lr, seed):
    rng = np.random.default_rng(seed)
    opt = paddle.optimizer.Momentum(lr, momentum=0.9, parameters=net.parameters(), weight_decay=1e-4)
    net.train()
    for _ in range(epochs):
        for x, y in batches(data, 64, rng):
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            opt.clear_grad()


def accuracy(net, data) -> float:
    net.eval()
    right = 0
    with paddle.no_grad():
        for x, y in batches(data, 256):
            right += int((net(x).argmax(axis=1) == y).sum())
    return right / len(data.labels)


def run(seed: int, ratio: float, epochs: int, finetune: int, everything: bool = False) -> list:
    paddle.seed(seed)
    train_set, eval_set = digits_datasets(DataConfig(source="digits"), tuple(SHAPE[1:]))
    net = SmallResNeXt()
    train(net, train_set, epochs, 0.05, seed)
    base, macs = accuracy(net, eval_set), count_flops(net, SHAPE)
    rows = []
    for mode in MODES:
        pruned = copy.deepcopy(net)
        ratios = ratio if everything else {pattern: ratio for pattern in AROUND}
        prune(pruned, SHAPE, ratios, structure={"grouped_conv": mode})
        recalibrate_bn(pruned, [x for x, _ in list(batches(train_set, 64))[:8]])
        row = {"seed": seed, "mode": mode, "unpruned": base, "macs_cut": 1 - count_flops(pruned, SHAPE) / macs,
               "one_shot": accuracy(pruned, eval_set)}
        paddle.seed(seed)
        train(pruned, train_set, finetune, 0.01, seed)
        row["finetuned"] = accuracy(pruned, eval_set)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--finetune", type=int, default=2)
    parser.add_argument("--all", action="store_true", help="prune every group, not only around the grouped convs")
    parser.add_argument("--out", default=os.path.join("output", "bench_grouped_modes.json"))
    args = parser.parse_args()
    rows = [r for seed in args.seeds for r in run(seed, args.ratio, args.epochs, args.finetune, args.all)]
    summary = {mode: {key: statistics.mean(r[key] for r in rows if r["mode"] == mode)
                      for key in ("unpruned", "macs_cut", "one_shot", "finetuned")} for mode in MODES}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "rows": rows, "summary": summary}, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
