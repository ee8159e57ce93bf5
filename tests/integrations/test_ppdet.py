"""PruneDetCallback driven by PaddleDetection's real ``Trainer`` on tiny synthetic data
(skipped without ppdet). The trainer is built offline: ppdet's ``create`` returns
instances placed in its global config, so the dataset, reader, learning rate and
optimizer are small objects written here, and the model is a tiny ``BaseArch``."""
import os

import numpy as np
import paddle
import paddle.nn as nn
import pytest

pytest.importorskip("ppdet")

from helpers import BENCHMARKS
from ppdet.core import workspace  # noqa: E402
from ppdet.engine import Trainer  # noqa: E402
from ppdet.modeling.architectures.meta_arch import BaseArch  # noqa: E402

from slim_callbacks import load_pruned, prune  # noqa: E402
from slim_callbacks.integrations.ppdet import PruneDetCallback, cut_ema  # noqa: E402

SIZE, BATCH, STEPS, EPOCHS = 16, 2, 3, 3


class TinyDet(BaseArch):
    """A backbone, a neck and a 4-box-coordinate head; train: a loss dict."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2D(3, 8, 3, padding=1), nn.BatchNorm2D(8), nn.ReLU(),
                                      nn.Conv2D(8, 16, 3, stride=2, padding=1), nn.BatchNorm2D(16),
                                      nn.ReLU())
        self.neck = nn.Sequential(nn.Conv2D(16, 8, 1), nn.BatchNorm2D(8), nn.ReLU())
        self.head = nn.Conv2D(8, 4, 1)

    def model_arch(self):
        feat = self.neck(self.backbone(self.inputs["image"]))
        self.boxes = self.head(feat).mean(axis=[2, 3])

    def get_loss(self):
        loss = ((self.boxes - self.inputs["gt_bbox"]) ** 2).mean()
        return {"loss": loss, "box": loss}

    def get_pred(self):
        return {"bbox": self.boxes, "bbox_num": paddle.full([self.boxes.shape[0]], 1, "int32")}


def batch(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": paddle.to_tensor(rng.standard_normal([BATCH, 3, SIZE, SIZE]).astype("float32")),
            "im_shape": paddle.full([BATCH, 2], float(SIZE)), "scale_factor": paddle.ones([BATCH, 2]),
            "gt_bbox": paddle.to_tensor(rng.random([BATCH, 4]).astype("float32"))}


class Data:
    """The dataset and its loader in one: ``steps`` fixed batches made by ``make(i)``."""

    def __init__(self, make, steps):
        self.dataset, self.make, self.steps = self, make, steps

    def set_epoch(self, epoch):
        pass

    def __len__(self):
        return self.steps

    def __iter__(self):
        return (self.make(i) for i in range(self.steps))


def momentum(lr, model):
    return paddle.optimizer.Momentum(lr, momentum=0.9, parameters=model.parameters())


class Instance:
    """What ppdet's ``create`` returns as is and the trainer calls."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def make_trainer(monkeypatch, tmp_path, model, make, steps=STEPS, epochs=EPOCHS):
    """ppdet's own Trainer (EMA on, a checkpoint every epoch) on synthetic batches."""
    data = Data(make, steps)
    for name, value in {"TrainDataset": Instance(lambda: data),
                        "TrainReader": Instance(lambda dataset, workers: data),
                        "LearningRate": Instance(lambda n: paddle.optimizer.lr.PiecewiseDecay(
                            [n * epochs], [0.01, 0.001])),
                        "OptimizerBuilder": Instance(momentum)}.items():
        monkeypatch.setitem(workspace.global_config, name, value)
    cfg = workspace.AttrDict(
        architecture=type(model).__name__, model=model, epoch=epochs, snapshot_epoch=1,
        log_iter=100, save_dir=str(tmp_path), filename="run", worker_num=0, metric="COCO",
        use_ema=True, ema_decay=0.9, TrainReader={"batch_size": BATCH},
        TestReader={"sample_transforms": []})
    return Trainer(cfg, mode="train")


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    paddle.seed(0)
    return make_trainer(monkeypatch, tmp_path, TinyDet(), batch)


def widths(model):
    return [model.backbone[0].weight.shape[0], model.backbone[3].weight.shape[0],
            model.neck[0].weight.shape[0]]


def states(trainer):
    """Copies of the EMA tensors and the Momentum velocities, by state-dict key."""
    velocity = trainer.optimizer._accumulators["velocity"]
    names = {p.name: key for key, p in trainer.model.state_dict().items()}
    return ({k: v.numpy() for k, v in trainer.ema.state_dict.items()},
            {names[n]: v.numpy() for n, v in velocity.items() if n in names})


def spy_on_events(callback, trainer):
    """Records the EMA and optimizer state just before and just after each event."""
    seen, take = [], callback.prune_after

    def prune_after(epoch):
        before = states(trainer)
        plan = take(epoch)
        seen.append((plan, before, states(trainer)))
        return plan

    callback.prune_after = prune_after
    return seen


def kept_slice(array, cut):
    for axis, index in cut.kept.items():
        array = np.take(array, index, axis=axis)
    return array


def test_the_trainer_prunes_model_optimizer_and_ema_between_epochs(trainer):
    model = trainer.model
    callback = PruneDetCallback(trainer, batch(), ratios=0.5, schedule={0: 0.5})
    trainer.register_callbacks([callback])
    full, seen = widths(model), spy_on_events(callback, trainer)
    trainer.train()

    assert [e["epoch"] for e in callback.pruner.history] == [0]
    assert widths(model) == [w // 2 for w in full]
    (plan, (ema0, mom0), (ema1, mom1)), = [s for s in seen if s[0] is not None]
    cut_keys = {f"{name}.{attr}": cut for (name, attr), cut in plan.params.items()}
    assert len(cut_keys) > 6 and set(cut_keys) <= set(ema1)
    for key, cut in cut_keys.items():
        assert ema1[key].shape == tuple(cut.shape_after) != ema0[key].shape
        np.testing.assert_array_equal(ema1[key], kept_slice(ema0[key], cut))
        if key in mom0:  # BatchNorm statistics have no velocity
            np.testing.assert_array_equal(mom1[key], kept_slice(mom0[key], cut))
    for key, value in model.state_dict().items():  # and they trained on with these shapes
        assert list(trainer.ema.state_dict[key].shape) == list(value.shape)

    callback.on_epoch_begin({"epoch_id": EPOCHS - 1, "mode": "train"})  # as ppdet's evaluation
    assert len(callback.pruner.history) == 1                            # calls it again: no-op
    model.eval()
    assert model(batch(7))["bbox"].shape == [BATCH, 4]
    model.train()
    assert np.isfinite(float(model(batch(7))["loss"]))


def test_the_ledgers_beside_the_checkpoints_reload_the_pruned_model(trainer, tmp_path):
    from ppdet.utils.checkpoint import load_pretrain_weight

    callback = PruneDetCallback(trainer, batch(), ratios=0.5, schedule={1: 0.5})
    trainer.register_callbacks([callback])
    trainer.train()
    directory = tmp_path / "run"
    assert sorted(f for f in os.listdir(directory) if f.endswith(".pruning.json")) == [
        "0.pruning.json", "1.pruning.json", "model_final.pruning.json"]
    model, final = trainer.model, str(directory / "model_final")
    model.set_dict(paddle.load(final + ".pdparams"))  # the EMA weights ppdet saved
    model.eval()
    expected = model(batch(5))["bbox"].numpy()

    paddle.seed(3)
    fresh = TinyDet()
    load_pruned(fresh, final, load_weights=False)  # the widths, before ppdet's loader
    assert widths(fresh) == widths(model)
    load_pretrain_weight(fresh, final)
    fresh.eval()
    np.testing.assert_allclose(fresh(batch(5))["bbox"].numpy(), expected, rtol=1e-5, atol=1e-6)
    earlier = TinyDet()
    load_pruned(earlier, str(directory / "0"))  # before the event: the full widths
    assert widths(earlier) == widths(TinyDet())


def test_ema_entries_that_are_the_parameters_themselves_are_cut_once():
    from ppdet.optimizer.ema import ModelEMA

    paddle.seed(0)
    model = TinyDet()
    ema = ModelEMA(model, decay=0.5, ema_black_list=["neck"])  # neck: the model's own tensors
    model.train()
    model(batch())
    ema.update()
    before = {k: v.numpy() for k, v in ema.state_dict.items()}
    plan = prune(model, (batch(),), ratios=0.5)
    assert cut_ema(ema, plan) > 0
    for (name, attr), cut in plan.params.items():
        key = f"{name}.{attr}"
        expected = kept_slice(before[key], cut)
        assert (ema.state_dict[key] is model.state_dict()[key]) == key.startswith("neck")
        np.testing.assert_array_equal(ema.state_dict[key].numpy(), expected)


def test_without_ppdet_the_callback_says_how_to_install_it(monkeypatch):
    import sys

    from slim_callbacks.core.errors import SlimError
    from slim_callbacks.integrations import ppdet as adapter

    monkeypatch.setitem(sys.modules, "ppdet.engine.callbacks", None)
    monkeypatch.setattr(adapter, "_DEFINED", {})
    with pytest.raises(SlimError, match="pip install paddledet"):
        adapter.PruneDetCallback


@pytest.mark.slow
def test_pp_yoloe_s_prunes_in_the_trainer_and_reloads(tmp_path, monkeypatch):
    """PP-YOLOE-s from ppdet.modeling parts, its own loss, 128x128 images (~15 s)."""
    from ppdet.utils.checkpoint import load_pretrain_weight
    monkeypatch.syspath_prepend(BENCHMARKS)
    from zoo_toolkits import detector_batch, head_outputs, ppyoloe_s

    def make(i):
        paddle.seed(i)
        return detector_batch(paddle.randn([BATCH, 3, 128, 128]), num_classes=4)

    paddle.seed(0)
    model = ppyoloe_s(num_classes=4)
    trainer = make_trainer(monkeypatch, tmp_path, model, make, steps=2, epochs=2)
    callback = PruneDetCallback(trainer, make(0), ratios=0.3, schedule={0: 0.3})
    trainer.register_callbacks([callback])
    seen = spy_on_events(callback, trainer)
    trainer.train()

    (plan, (ema0, _), (ema1, _)), = [s for s in seen if s[0] is not None]
    before, after = callback.pruner.history[0]["macs"]
    assert after < 0.6 * before
    for (name, attr), cut in plan.params.items():
        key = f"{name}.{attr}"
        np.testing.assert_array_equal(ema1[key], kept_slice(ema0[key], cut))
    final = str(tmp_path / "run" / "model_final")
    model.set_dict(paddle.load(final + ".pdparams"))
    expected = head_outputs(model.yolo_head)(model, make(9))  # scores and boxes before NMS
    paddle.seed(1)
    fresh = ppyoloe_s(num_classes=4)
    load_pruned(fresh, final, load_weights=False)
    load_pretrain_weight(fresh, final)
    np.testing.assert_allclose(head_outputs(fresh.yolo_head)(fresh, make(9)), expected,
                               rtol=1e-4, atol=1e-5)


class WidthMetric:
    """A ppdet metric that records the backbone width each evaluation ran with and
    reports a rising 'bbox' AP, so every evaluation is the best so far."""

    def __init__(self, trainer):
        self.trainer, self.widths = trainer, []

    def update(self, data, outs):
        assert np.isfinite(outs["bbox"].numpy()).all()
        self.widths.append(widths(self.trainer.model))

    def accumulate(self):
        pass

    def log(self):
        pass

    def reset(self):
        pass

    def get_results(self):
        return {"bbox": [len(self.widths)]}


def test_validating_during_training_evaluates_the_pruned_model_and_its_best_model_reloads(
        tmp_path, monkeypatch):
    from ppdet.utils.checkpoint import load_pretrain_weight

    def eval_batch(i):
        return {**batch(10 + i), "im_id": paddle.arange(BATCH).reshape([BATCH, 1])}

    paddle.seed(0)
    trainer = make_trainer(monkeypatch, tmp_path, TinyDet(), batch)
    evaluation = Data(eval_batch, 1)
    metric = WidthMetric(trainer)
    for name, value in {"EvalDataset": Instance(lambda: evaluation),
                        "EvalReader": Instance(lambda *args, **kwargs: evaluation)}.items():
        monkeypatch.setitem(workspace.global_config, name, value)
    monkeypatch.setattr(trainer, "_init_metrics", lambda validate=False: setattr(trainer, "_metrics", [metric]))
    trainer.cfg.update(EvalReader={"batch_size": BATCH})
    callback = PruneDetCallback(trainer, batch(), ratios=0.5, schedule={0: 0.5})
    trainer.register_callbacks([callback])
    trainer.train(validate=True)

    full, pruned = widths(TinyDet()), widths(trainer.model)
    assert pruned != full and metric.widths == [full, pruned, pruned]  # one eval per epoch
    assert [event["epoch"] for event in callback.pruner.history] == [0]
    best = str(tmp_path / "run" / "best_model")
    assert os.path.exists(best + ".pruning.json")
    model = trainer.model
    model.set_dict(paddle.load(best + ".pdparams"))
    model.eval()
    expected = model(batch(5))["bbox"].numpy()
    fresh = TinyDet()
    load_pruned(fresh, best, load_weights=False)
    load_pretrain_weight(fresh, best)
    fresh.eval()
    np.testing.assert_allclose(fresh(batch(5))["bbox"].numpy(), expected, rtol=1e-5, atol=1e-6)
