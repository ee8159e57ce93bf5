"""Helpers shared by the tests: dead channels, BN calibration, tiny networks."""
import contextlib
import os

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from slim_callbacks.core.paddle_utils import layer_table
from slim_callbacks.engine.criteria import get_criterion
from slim_callbacks.engine.planner import select_units
from slim_callbacks.engine.selectors import keep_count
from slim_callbacks.pruning.pruner import prune
from slim_callbacks.tracing.groups import CHANNEL, IN
from slim_callbacks.tracing.tracer import trace

#: the tests folder (helpers, and the scripts tests start), the repository, its benchmarks
TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
BENCHMARKS = os.path.join(ROOT, "benchmarks")


def calibrate(net, shape, steps=3, seed=0):
    """Gives BatchNorm running statistics that keep activations of order one."""
    paddle.seed(seed)
    net.train()
    with paddle.no_grad():
        for _ in range(steps):
            net(paddle.randn([4] + list(shape[1:])))
    net.eval()


def kill_units(net, graph, ratio=0.3, seed=0, only=None, units=None):
    """Makes exactly the channels a ``ratio`` prune removes dead: zero producer rows,
    biases and BatchNorm scale/shift (``units``: these unit indices of each group
    instead of random ones). Returns {group name: dead unit indices}."""
    rng = np.random.default_rng(seed)
    layers = layer_table(net)
    dead_units = {}
    for group in graph.prunable_groups():
        if only is not None and group.name != only:
            continue
        if units is not None:
            dead = np.asarray(units)
        elif group.segments is None:
            dead = rng.choice(group.num_units, group.num_units - keep_count(group.num_units, ratio),
                              replace=False)
        else:  # the same number from every segment, as the planner takes them
            dead = select_units(group, rng.random(group.num_units), ratio, get_criterion("l1_norm"))
        dead_units[group.name] = dead
        for m in group.members:
            if m.role == IN or m.attr in ("_mean", "_variance"):
                continue
            if m.role == CHANNEL and "Conv" in graph.layer_types.get(m.layer, ""):
                continue  # depthwise filters see a zero input anyway
            param = layers[m.layer]._parameters[m.attr]
            array = param.numpy()
            index = [slice(None)] * array.ndim
            index[m.axis] = m.indices[np.isin(m.units, dead)]
            array[tuple(index)] = 0
            param.set_value(array)
    return dead_units


def assert_dead_channels_prune_exactly(net, shape, ratio=0.3, structure=None):
    """Zero the channels a prune removes, prune them: eval outputs must not move."""
    calibrate(net, shape)
    kill_units(net, trace(net, shape, structure), ratio=ratio)
    x = paddle.randn([2] + shape[1:])
    before = outputs(net, x)
    plan = prune(net, shape, ratio, structure=structure)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)
    return plan


def randomize(net, seed=0):
    """Non-trivial values for every parameter (class token, embeddings, LayerNorms)."""
    rng = np.random.default_rng(seed)
    for p in net.parameters():
        p.set_value(rng.normal(0, 0.5, p.shape).astype("float32"))


@contextlib.contextmanager
def layer_norms_over(net, kept):
    """LayerNorms of ``net`` take their statistics over the channels ``kept[name]``
    only (the others output 0): what the pruned network computes."""
    saved = {}
    for name, layer in net.named_sublayers():
        if isinstance(layer, (nn.LayerNorm, nn.GroupNorm)) and name in kept:
            index = paddle.to_tensor(kept[name])

            def forward(x, layer=layer, index=index):
                weight, bias = (paddle.index_select(p, index) for p in (layer.weight, layer.bias))
                axis = -1 if isinstance(layer, nn.LayerNorm) else 1
                part = paddle.index_select(x, index, axis=axis)
                if axis == -1:
                    part = F.layer_norm(part, [len(index)], weight, bias, layer._epsilon)
                else:
                    part = F.group_norm(part, layer._num_groups, layer._epsilon, weight, bias)
                out = paddle.zeros_like(x)
                if axis == -1:
                    out[..., index] = part
                else:
                    out[:, index] = part
                return out
            saved[name], layer.forward = layer.forward, forward
    try:
        yield
    finally:
        for name, forward in saved.items():
            dict(net.named_sublayers())[name].forward = forward


def kept_channels(net, graph, dead):
    """LayerNorm name -> channel indices that survive, from the trace and dead units."""
    kept = {}
    for group in graph.prunable_groups():
        for m in group.members:
            if m.attr == "weight" and isinstance(dict(net.named_sublayers()).get(m.layer),
                                                 (nn.LayerNorm, nn.GroupNorm)):
                gone = m.indices[np.isin(m.units, dead.get(group.name, []))]
                kept[m.layer] = [i for i in range(net.state_dict()[f"{m.layer}.weight"].shape[0])
                                 if i not in set(gone.tolist())]
    return kept


# --- a tiny ViT (its attention reads its sizes from its own attributes) ---------
class Attention(nn.Layer):
    """Multi-head self-attention that reads its sizes from its own attributes."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n = x.shape[0], x.shape[1]
        qkv = self.qkv(x).reshape([b, n, 3, self.num_heads, self.head_dim]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(q.matmul(k, transpose_y=True) * self.scale, axis=-1)
        return self.proj(attn.matmul(v).transpose([0, 2, 1, 3]).reshape([b, n, -1]))


class Block(nn.Layer):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyViT(nn.Layer):
    """Patches of 8x8 (4 tokens at 16x16), a class token, a position embedding owned
    by the network itself, two blocks and a head on the class token."""

    def __init__(self, dim=16, heads=2, hidden=32, depth=2, classes=5):
        super().__init__()
        self.patch = nn.Conv2D(3, dim, 8, stride=8)
        self.cls_token = self.create_parameter([1, 1, dim])
        self.pos_embed = self.create_parameter([1, 5, dim])
        self.blocks = nn.LayerList([Block(dim, heads, hidden) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose([0, 2, 1])
        x = paddle.concat([self.cls_token.expand([x.shape[0], -1, -1]), x], axis=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class RuntimeScaledAttention(Attention):
    """Computes its scale from ``head_dim`` at run time: pruning head_dim would change it."""

    def forward(self, x):
        self.scale = self.head_dim ** -0.5
        return super().forward(x)


class SizesFromTheInput(Attention):
    """Sizes from the input's shape (``C // self.num_heads``): they follow the
    embedding width, not the attention's own channels."""

    def forward(self, x):
        n, c = x.shape[1], x.shape[2]
        qkv = self.qkv(x).reshape([-1, n, 3, self.num_heads, c // self.num_heads]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(q.matmul(k, transpose_y=True) * self.scale, axis=-1)
        return self.proj(attn.matmul(v).transpose([0, 2, 1, 3]).reshape([-1, n, c]))


def train_steps(net, opt, x, y, steps):
    """Losses of ``steps`` optimizer steps in train mode on one batch."""
    losses = []
    net.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    return losses


def momentum_losses(net, shape, steps=3, lr=0.1, classes=4):
    """Losses of ``steps`` Momentum steps in train mode on one random batch of
    ``classes`` examples (a pruned network must still learn it)."""
    optimizer = paddle.optimizer.Momentum(lr, parameters=net.parameters())
    x, labels = paddle.randn([classes] + list(shape[1:])), paddle.arange(classes)
    return train_steps(net, optimizer, x, labels, steps)


def snapshot(net, optimizer=None):
    """Copies of every state_dict tensor and optimizer accumulator."""
    state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
    if optimizer is not None:
        for kind, per_param in optimizer._accumulators.items():
            state.update({f"{kind}/{n}": t.numpy().copy() for n, t in per_param.items()})
    return state


def same(a, b):
    """True if two snapshots hold the same keys, shapes and values."""
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in a)


def outputs(net, x):
    net.eval()
    with paddle.no_grad():
        y = net(x)
    return (y[0] if isinstance(y, (list, tuple)) else y).numpy()


class ConvBN(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1):
        super().__init__(nn.Conv2D(cin, cout, k, stride, k // 2, groups=groups, bias_attr=False),
                         nn.BatchNorm2D(cout), nn.ReLU())


class ConcatNet(nn.Layer):
    """Two branches concatenated, then a conv and a classifier on the flattened map."""

    def __init__(self):
        super().__init__()
        self.a = ConvBN(3, 6)
        self.b = ConvBN(3, 4)
        self.mix = ConvBN(10, 8)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = paddle.concat([self.a(x), self.b(x)], axis=1)
        x = nn.functional.adaptive_avg_pool2d(self.mix(x), 4)
        return self.fc(paddle.flatten(x, 1))


class SENet(nn.Layer):
    """Squeeze-excitation multiply followed by a residual add."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 8)
        self.body = ConvBN(8, 8)
        self.se_reduce = nn.Conv2D(8, 4, 1)
        self.se_expand = nn.Conv2D(4, 8, 1)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        x = self.stem(x)
        y = self.body(x)
        s = nn.functional.adaptive_avg_pool2d(y, 1)
        s = nn.functional.hardsigmoid(self.se_expand(nn.functional.relu(self.se_reduce(s))))
        x = x + y * s
        return self.head(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class Seed(nn.Layer):
    """A network whose first conv parameter is named ``conv2d_0.w_0`` when it is the
    first Conv2D built in a fresh process (PaddleSlim's seed example)."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBN(3, 8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.conv(x), 1)
        return self.head(paddle.flatten(x, 1))


# --- a small trainable network and data for the callback tests ---------------
SHAPE = [1, 3, 16, 16]
WIDTHS = {"c1.0": 16, "c2.0": 32, "c3.0": 32}


class Net(nn.Layer):
    """Three conv-BN-ReLU blocks and a classifier: three prunable groups."""

    def __init__(self, classes=4):
        super().__init__()
        self.c1 = nn.Sequential(nn.Conv2D(3, 16, 3, padding=1, bias_attr=False), nn.BatchNorm2D(16), nn.ReLU())
        self.c2 = nn.Sequential(nn.Conv2D(16, 32, 3, 2, 1, bias_attr=False), nn.BatchNorm2D(32), nn.ReLU())
        self.c3 = nn.Sequential(nn.Conv2D(32, 32, 3, padding=1, bias_attr=False), nn.BatchNorm2D(32), nn.ReLU())
        self.fc = nn.Linear(32, classes)

    def forward(self, x):
        x = self.c3(self.c2(self.c1(x)))
        return self.fc(paddle.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def widths(net):
    return {name: int(getattr(net, name.split(".")[0])[0].weight.shape[0]) for name in WIDTHS}


def dataset(n=64, seed=0):
    """Learnable synthetic data: the class is the quadrant with the brightest blob."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, (n, 3, 16, 16)).astype("float32")
    y = rng.integers(0, 4, (n, 1)).astype("int64")
    for i, c in enumerate(y[:, 0]):
        r, q = divmod(int(c), 2)
        x[i, :, r * 8:(r + 1) * 8, q * 8:(q + 1) * 8] += 1.0
    return paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])


# A tiny recipe for `slim-callbacks run` tests: Net on synthetic 16x16 data, 3 epochs,
# pruned at 0.5 in two steps (epochs 0 and 1), checkpoints every epoch; no latency
# measurement (tests that want it switch deploy.latency on).
TINY_RECIPE = {"name": "tiny", "model": {"name": "helpers:Net"},
               "data": {"source": "synthetic", "image_size": 16, "num_classes": 4,
                        "train_samples": 16, "samples": 8},
               "train": {"epochs": 3, "batch_size": 8, "optimizer": {"name": "momentum"},
                         "lr": {"base": 0.05, "schedule": "constant"}},
               "pruning": {"ratios": 0.5, "schedule": {"kind": "epochs", "epochs": [0, 1]}},
               "logging": {"log_freq": 1, "visualdl": True}, "checkpoint": {"save_freq": 1},
               "deploy": {"latency": False}}


def exported(net, shape, tmp_path, dtype="float32"):
    """``net`` with random weights (BatchNorm statistics from a few forwards), exported
    for inputs of ``shape`` (``None``: a dynamic size) and ``dtype``; its prefix."""
    randomize(net)
    for layer in net.sublayers():
        if isinstance(layer, (nn.BatchNorm1D, nn.BatchNorm2D, nn.BatchNorm3D)):
            layer._variance.set_value(layer._variance.abs() + 0.5)
    if dtype == "float32":
        calibrate(net, [1, *shape[1:]])
    net.eval()
    prefix = str(tmp_path / "model")
    paddle.jit.save(net, prefix, input_spec=[paddle.static.InputSpec(shape, dtype, "x")])
    return prefix


def read_visualdl(log_dir, session="train"):
    """{tag: [(step, value)]} for scalars and {tag: [record]} for histograms of one
    session's directory (it holds one record file)."""
    from visualdl import LogReader
    files = os.listdir(os.path.join(log_dir, session))
    assert len(files) == 1 and files[0].startswith("vdlrecords"), files
    reader = LogReader(file_path=os.path.join(log_dir, session, files[0]))
    scalars, hists = {}, {}
    for path, kind in reader.tags().items():
        tag = path.split(".log/", 1)[1].replace("%", "/")
        if kind == "scalar":
            scalars[tag] = [(r.id, r.value) for r in reader.get_data("scalar", tag)]
        elif kind == "histogram":
            hists[tag] = reader.get_data("histogram", tag)
    return scalars, hists


#: the smallest recipe the schema accepts (MobileNetV1 on the bundled digits)
BASE_RECIPE = {"name": "mbv1_digits", "model": {"name": "mobilenet_v1"},
               "data": {"source": "digits"}, "pruning": {"ratios": 0.5}}


#: PruneCallback arguments that are no PruningSpec field
CALLBACK_ONLY = ("example_inputs", "input_shape", "forward_fn", "resume_from", "reset_optimizer")


def aided(*args, **kwargs):
    """``PruneCallback(*args, **kwargs)`` where the training aids among ``kwargs``
    (``distill``, ``max_metric_drop``, ``bn_l1``... - the fields of ``TrainingAids``)
    are switched on in the callback's spec, the form that replaced the deprecated
    aid keywords."""
    import dataclasses

    from slim_callbacks.callbacks import PruneCallback
    from slim_callbacks.pruning.aids import TrainingAids
    names = [f.name for f in dataclasses.fields(TrainingAids)]
    aids = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
    own = {k: kwargs.pop(k) for k in list(kwargs) if k in CALLBACK_ONLY}
    spec = PruneCallback(*args, **kwargs).spec
    return PruneCallback(spec=dataclasses.replace(spec, aids=TrainingAids(**aids)), **own)

class At(paddle.callbacks.Callback):
    """Runs ``fn`` at one epoch's end (placed before or after the pruning callback)."""

    def __init__(self, epoch, fn):
        super().__init__()
        self.epoch, self.fn = epoch, fn

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.fn()


def assert_whole_heads_prune_exactly(net, shape, layer, units):
    """Whole heads ``units`` of ``layer`` (a fused qkv Linear) made dead, then
    ``{layer: 0.5}`` pruned by heads: the outputs stay the same."""
    structure = {"attention": "heads"}
    kill_units(net, trace(net, shape, structure), only=layer, units=units)
    x = paddle.randn([2] + list(shape[1:]))
    before = outputs(net, x)
    prune(net, shape, {layer: 0.5}, structure=structure)
    np.testing.assert_allclose(outputs(net, x), before, atol=1e-5)


def counting_traces(monkeypatch):
    """A list that gets one item per trace made from now on (``Tracer`` built)."""
    from slim_callbacks.tracing import tracer as tracer_module
    made = []
    real = tracer_module.Tracer.__init__

    def init(self, *args, **kwargs):
        made.append(1)
        real(self, *args, **kwargs)
    monkeypatch.setattr(tracer_module.Tracer, "__init__", init)
    return made
