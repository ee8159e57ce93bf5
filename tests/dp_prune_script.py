"""Data-parallel PruneCallback run, started by tests/callbacks/test_data_parallel.py with
``python -m paddle.distributed.launch --nproc_per_node 2 dp_prune_script.py OUT_DIR``.

Every rank trains on its own shard (fit's DistributedBatchSampler), prunes at the end of
epoch 1 and trains two more epochs; it then writes its final weights, shapes and pruning
history to ``OUT_DIR/rank<r>.npz`` / ``.json``. Identical weights across ranks after the
prune prove that gradients are still all-reduced with the new shapes. With a second
argument ``distill``, the callback also distils (each rank its own teacher) and
recalibrates BatchNorm statistics after each event (``BNRecalibration(2)``).
"""
import json
import os
import sys

import numpy as np
import paddle
import paddle.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers import SHAPE, Net, dataset, widths  # noqa: E402

from slim_callbacks.callbacks import (  # noqa: E402
    BNRecalibration,
    DistillCallback,
    PruneCallback,
    VisualDLLogger,
)


def synced_gradient_error(net, ddp, rank):
    """Max |gradient through DataParallel - mean of the ranks' local gradients| for a
    rank-specific batch, with the pruned shapes."""
    paddle.seed(100 + rank)
    x = paddle.randn([4] + SHAPE[1:])
    net.train()
    net.clear_gradients()
    net(x).sum().backward()  # no prepare_for_backward: local gradients only
    local = {p.name: p.grad.numpy().copy() for p in net.parameters() if p.grad is not None}
    net.clear_gradients()
    ddp(x).sum().backward()
    worst = 0.0
    for p in net.parameters():
        if p.name in local:
            total = paddle.to_tensor(local[p.name])
            paddle.distributed.all_reduce(total)
            worst = max(worst, float(np.abs(p.grad.numpy() - total.numpy() / 2).max()))
    net.clear_gradients()
    return worst


def main(out_dir, extra=()):
    rank = paddle.distributed.get_rank()
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    cb = PruneCallback(0.5, "l1_norm", prune_epochs=[0, 1], input_shape=SHAPE)
    aids = [DistillCallback(alpha=0.5), BNRecalibration(2)] if "distill" in extra else []
    model.fit(dataset(128), epochs=3, batch_size=16, verbose=0, shuffle=True,
              save_dir=os.path.join(out_dir, "ckpt"),
              callbacks=[cb, *aids, VisualDLLogger(os.path.join(out_dir, "vdl"), log_freq=1)])
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    grad_error = synced_gradient_error(net, model._adapter.ddp_model, rank)
    np.savez(os.path.join(out_dir, f"rank{rank}.npz"), **state)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump({"world": paddle.distributed.get_world_size(), "widths": widths(net),
                   "events": [h["epoch"] for h in cb.history],
                   "plan": cb.plan.to_dict(), "grad_error": grad_error,
                   "distill_steps": cb.distill.steps if cb.distill is not None else 0,
                   "loss_restored": not hasattr(model._loss, "task_loss")}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
