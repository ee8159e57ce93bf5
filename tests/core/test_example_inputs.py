"""Example inputs of any structure: several inputs, dicts, int64 token ids, a detector's
loss forward with targets, several outputs; each pruned exactly (dead channels removed
=> the same outputs)."""
import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import kill_units, same, snapshot
from paddle.static import InputSpec

from slim_callbacks import ConfigError, PruneCallback, Pruner, SlimError, count_flops, export, prune, trace
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.tracing.op_args import tensors_in


def conv(cin, cout):
    return nn.Sequential(nn.Conv2D(cin, cout, 3, padding=1), nn.ReLU())


class TwoInputs(nn.Layer):
    """forward(img, meta): an image branch and a float feature branch, joined."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(conv(3, 8), conv(8, 8), nn.AdaptiveAvgPool2D(1), nn.Flatten())
        self.meta = nn.Sequential(nn.Linear(5, 8), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, img, meta):
        return self.head(paddle.concat([self.body(img), self.meta(meta)], axis=1))


class ImageAndIds(nn.Layer):
    """forward(image, ids) called with a dict: an int64 id branch through an Embedding."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(conv(3, 8), conv(8, 8), nn.AdaptiveAvgPool2D(1), nn.Flatten())
        self.embed = nn.Embedding(20, 8)
        self.mix = nn.Sequential(nn.Linear(8, 12), nn.ReLU())
        self.head = nn.Linear(20, 3)

    def forward(self, image, ids):
        words = self.mix(self.embed(ids).mean(axis=1))
        return self.head(paddle.concat([self.body(image), words], axis=1))


class TokenModel(nn.Layer):
    """Embedding -> Linear -> Linear on int64 token ids."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, ids):
        return self.fc2(nn.functional.relu(self.fc1(self.embed(ids))))


class Detector(nn.Layer):
    """Eval: (class map, box map); train: a loss dict, which needs the targets."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(conv(3, 8), conv(8, 12))
        self.cls = nn.Conv2D(12, 3, 1)
        self.box = nn.Conv2D(12, 4, 1)

    def forward(self, image, targets=None):
        feat = self.backbone(image)
        cls, box = self.cls(feat), self.box(feat)
        if not self.training:
            return cls, box
        if targets is None:
            raise ValueError("targets are needed in train mode")
        return {"loss_cls": ((cls.mean(axis=[2, 3]) - targets["labels"]) ** 2).mean(),
                "loss_box": (box.mean(axis=[2, 3]) - targets["boxes"]).abs().mean()}


class TwoOutputs(nn.Layer):
    """Returns (logits, features): channels reaching either output are kept."""

    def __init__(self):
        super().__init__()
        self.stem = conv(3, 8)
        self.mid = conv(8, 8)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2D(1), nn.Flatten())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        feat = self.mid(self.stem(x))
        return self.fc(self.pool(feat)), feat


class StoresInputs(nn.Layer):
    """Like a ppdet detector: stores its input dict, then needs 'gt' in train mode."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(conv(3, 8), conv(8, 8))

    def forward(self, inputs):
        self.inputs = inputs
        self.image = inputs["image"]  # a Tensor attribute: a buffer
        if self.training and "gt" not in inputs:
            raise KeyError("gt")
        return self.body(inputs["image"])


def flat_outputs(net, inputs, args):
    net.eval()
    with paddle.no_grad():
        return [t.numpy() for t in tensors_in(inputs.run(net, args))]


def assert_prunes_exactly(net, example, ratio=0.5, forward_fn=None):
    """Zero the channels a prune removes, prune them: eval outputs must not move."""
    paddle.seed(0)
    inputs = as_inputs(example, forward_fn)
    kill_units(net, trace(net, inputs), ratio=ratio)
    args = inputs.with_batch(2).tensors("randn")
    before = flat_outputs(net, inputs, args)
    plan = prune(net, inputs, ratio)
    assert len(plan) > 0
    after = flat_outputs(net, inputs, args)
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_allclose(a, b, atol=1e-5)
    return plan


# -- the structures -------------------------------------------------------------------
def test_every_form_reads_into_one_structure():
    image = {"shape": [1, 3, 8, 8], "dtype": "float32"}
    ids = {"shape": [1, 4], "dtype": "int64"}
    assert as_inputs([1, 3, 8, 8]).shape == [1, 3, 8, 8]
    assert as_inputs([InputSpec([None, 3, 8, 8], "float32", "a"), InputSpec([-1, 4], "int64", "b")]) \
        == as_inputs([dict(image, name="a"), dict(ids, name="b")])
    assert as_inputs({"image": [1, 3, 8, 8], "ids": ids}).to_data() == {"image": image, "ids": ids}
    real = as_inputs((paddle.ones([2, 3]), np.arange(4).reshape(2, 2)))
    assert real.describe() == "(float32[2, 3], int64[2, 2])" and real.batch == 2
    assert [t.numpy().tolist() for t in real.with_batch(3).tensors()][1] == [[0, 1], [2, 3], [0, 1]]
    nested = as_inputs([{"image": [2, 3, 8, 8], "meta": {"ids": ids}}])
    assert as_inputs(nested.to_data()) == nested and nested.batch == 2
    made = as_inputs({"ids": ids}).tensors("randn")
    assert made["ids"].dtype == paddle.int64 and int(made["ids"].abs().sum()) == 0


@pytest.mark.parametrize("value, message", [
    ({"shape": [1, 4], "dtype": "int65"}, r"^example_inputs.dtype: 'int65' is not allowed; expected a dtype"),
    ([[1, 3, 8, 8], {"shape": [1, 0]}], r"^example_inputs\[1\].shape: \[1, 0\] is not allowed"),
    ({}, r"^example_inputs: \{\} is not allowed"),
    ([1.5, 2], r"^input_shape: \[1.5, 2\] is not allowed; expected a list of positive ints"),
    (object(), r"^example_inputs: <object .*> is not allowed"),
])
def test_bad_inputs_are_one_line_config_errors(value, message):
    with pytest.raises(ConfigError, match=message):
        as_inputs(value)


def test_both_or_a_bad_forward_fn_are_refused_before_any_change():
    net = TwoOutputs()
    before = snapshot(net)
    with pytest.raises(ConfigError, match=r"^input_shape: \[1, 3, 8, 8\] is not allowed; expected None"):
        prune(net, [1, 3, 8, 8], 0.5, input_shape=[1, 3, 8, 8])
    with pytest.raises(ConfigError, match=r"^forward_fn: 3 is not allowed"):
        Pruner(net, [1, 3, 8, 8], ratios=0.5, forward_fn=3)
    assert same(snapshot(net), before)


# -- pruning them exactly ------------------------------------------------------------
def test_two_inputs_prune_exactly():
    net = TwoInputs()
    assert_prunes_exactly(net, ([1, 3, 8, 8], [1, 5]))
    assert net.body[0][0].weight.shape[0] == 4 and net.meta[0].weight.shape[1] == 4


def test_a_dict_with_an_int64_branch_prunes_exactly():
    net = ImageAndIds()
    assert_prunes_exactly(net, {"image": [1, 3, 8, 8], "ids": {"shape": [1, 6], "dtype": "int64"}})
    assert net.mix[0].weight.shape[1] == 6 and net.body[0][0].weight.shape[0] == 4


def test_a_token_model_prunes_with_int64_ids():
    net = TokenModel()
    with pytest.raises(SlimError, match=r"input_shape \[1, 12\] was rejected by the network"):
        prune(TokenModel(), [1, 12], 0.5)
    assert_prunes_exactly(net, [InputSpec([None, 12], "int64", "ids")])
    assert net.fc1.weight.shape[1] == 8
    linear_macs = sum(int(np.prod(fc.weight.shape)) for fc in (net.fc1, net.fc2))
    assert count_flops(net, {"ids": {"shape": [2, 12], "dtype": "int64"}}) == 12 * linear_macs


def test_a_detector_train_forward_needs_its_targets_and_says_how():
    with pytest.raises(SlimError, match=r"rejected by the network in train mode: ValueError: "
                                        r"targets are needed.*forward_fn=lambda network, inputs"):
        prune(Detector(), ([1, 3, 8, 8],), 0.5)
    net = Detector()
    targets = {"labels": [1, 3], "boxes": [1, 4]}

    def forward_fn(network, inputs):
        image, targets = inputs
        return network(image, targets) if network.training else network(image)
    assert_prunes_exactly(net, ([1, 3, 8, 8], targets), forward_fn=forward_fn)
    assert net.backbone[1][0].weight.shape[0] == 6 and net.cls.weight.shape[1] == 6
    net.train()
    losses = net(paddle.randn([2, 3, 8, 8]), {"labels": paddle.zeros([2, 3]), "boxes": paddle.zeros([2, 4])})
    assert set(losses) == {"loss_cls", "loss_box"}


def test_channels_reaching_any_output_are_kept():
    net = TwoOutputs()
    plan = assert_prunes_exactly(net, [1, 3, 8, 8])
    assert net.stem[0].weight.shape[0] == 4 and net.mid[0].weight.shape[0] == 8
    assert {g["name"] for g in plan.groups} == {"stem.0"}


def test_a_failed_forward_leaves_no_attribute_behind():
    net = StoresInputs()
    with pytest.raises(SlimError, match=r"in train mode: KeyError: 'gt'"):
        prune(net, [{"image": [1, 3, 8, 8]}], 0.5)
    assert "inputs" not in vars(net) and "image" not in net._buffers
    net.eval()
    assert net({"image": paddle.zeros([1, 3, 8, 8])}).shape == [1, 8, 8, 8]


def test_a_forward_that_fails_after_pruning_is_rolled_back_with_its_attributes():
    net = StoresInputs()
    pruner = Pruner(net, [{"image": [1, 3, 8, 8], "gt": [1]}], ratios=0.5).prepare()
    before = snapshot(net)
    original = net.body[1].forward

    def failing(x):
        net.body.seen = x
        raise RuntimeError("broken after pruning")
    net.body[1].forward = failing
    with pytest.raises(SlimError, match="failed a forward pass in eval mode.*broken after pruning"):
        pruner.prune_to(pruner.group_ratios, record=False)
    assert same(snapshot(net), before) and "seen" not in net.body._buffers
    net.body[1].forward = original
    net.eval()
    assert net({"image": paddle.zeros([1, 3, 8, 8])}).shape == [1, 8, 8, 8]


def test_prune_callback_takes_a_two_input_paddle_model_from_its_input_specs():
    net = ImageAndIds()
    model = paddle.Model(net, inputs=[InputSpec([None, 3, 8, 8], "float32", "image"),
                                      InputSpec([None, 6], "int64", "ids")],
                         labels=[InputSpec([None, 1], "int64", "label")])
    model.prepare(paddle.optimizer.Momentum(0.01, parameters=net.parameters()), nn.CrossEntropyLoss())
    data = paddle.io.TensorDataset([paddle.randn([8, 3, 8, 8]), paddle.randint(0, 20, [8, 6]),
                                    paddle.randint(0, 3, [8, 1])])
    callback = PruneCallback(ratios=0.5, prune_epochs=[0])
    model.fit(data, epochs=2, batch_size=4, verbose=0, callbacks=[callback])
    assert [h["epoch"] for h in callback.history] == [0]
    assert callback.example_inputs.describe() == "(float32[1, 3, 8, 8], int64[1, 6])"
    assert net.body[0][0].weight.shape[0] == 4 and net.mix[0].weight.shape[1] == 6
    assert callback.input_shape is None


def test_prune_callback_without_shapes_says_what_to_pass():
    net = TwoInputs()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.01, parameters=net.parameters()), nn.MSELoss())
    data = paddle.io.TensorDataset([paddle.randn([4, 3, 8, 8]), paddle.randn([4, 5]), paddle.randn([4, 3])])
    with pytest.raises(ConfigError, match=r"^example_inputs: None is not allowed; expected the "
                                          r"network's example inputs"):
        model.fit(data, epochs=1, batch_size=4, verbose=0,
                  callbacks=[PruneCallback(ratios=0.5, prune_epochs=[0])])


def test_a_pruned_two_input_model_exports_verified(tmp_path):
    net = ImageAndIds()
    example = [InputSpec([None, 3, 8, 8], "float32", "image"), InputSpec([None, 6], "int64", "ids")]
    prune(net, example, 0.5)
    result = export(net, tmp_path / "out", example)
    assert result.max_abs_diff["paddle"] < 1e-4
    batch = (np.random.default_rng(0).standard_normal([3, 3, 8, 8]).astype("float32"),
             np.arange(18).reshape(3, 6) % 20)
    assert export(net, tmp_path / "dyn", example, inputs=batch, dynamic_batch=True).max_abs_diff["paddle"] < 1e-4
    with pytest.raises(ConfigError, match=r"^inputs: .*expected None or a real batch like "
                                          r"\(float32\[1, 3, 8, 8\], int64\[1, 6\]\)"):
        export(net, tmp_path / "bad", example, inputs=batch[:1])
    assert not (tmp_path / "bad").exists()


# -- recipes: model.inputs --------------------------------------------------------------
RECIPE = {"name": "t", "model": {"name": "lenet"}, "data": {"source": "synthetic"}}
INPUTS = [{"name": "image", "shape": [1, 3, 8, 8]}, {"name": "ids", "shape": [1, 6], "dtype": "int64"}]


def test_a_recipe_names_its_inputs_and_the_engine_gets_them():
    from slim_callbacks.app.schema import Recipe
    recipe = Recipe(**{**RECIPE, "model": {"name": "lenet", "inputs": INPUTS}})
    assert Recipe.from_dict(recipe.to_dict()) == recipe and "input_shape" not in recipe.to_dict()
    assert as_inputs(recipe.example_inputs) == as_inputs([InputSpec([None, 3, 8, 8], "float32", "image"),
                                                          InputSpec([None, 6], "int64", "ids")])
    assert prune(ImageAndIds(), recipe.example_inputs, 0.5)
    assert "inputs" not in Recipe(**RECIPE).to_dict()["model"]


@pytest.mark.parametrize("inputs, extra, message", [
    ([{"name": "ids", "shape": [1, 6], "dtype": "int65"}], {}, r"^model.inputs\[0\].dtype: 'int65' .*one of float32"),
    ([{"name": "ids", "shape": [1, "6"]}], {}, r"^model.inputs\[0\].shape: \[1, '6'\] .*positive ints"),
    ([{"name": "ids", "size": [1, 6]}], {}, r"^model.inputs\[0\].size: .*a key of an input: name, shape, dtype"),
    (INPUTS, {"input_shape": [1, 3, 8, 8]}, r"^input_shape: \[1, 3, 8, 8\] .*null when model.inputs is given"),
])
def test_bad_recipe_inputs_are_config_errors(inputs, extra, message):
    from slim_callbacks.app.schema import Recipe
    with pytest.raises(ConfigError, match=message):
        Recipe(**{**RECIPE, "model": {"name": "lenet", "inputs": inputs}, **extra})
