"""Knowledge distillation: kd_loss, DistillCallback on its own and beside a PruneCallback."""
import copy
import re

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, Net, aided, dataset, same, snapshot, widths

from slim_callbacks.callbacks import DistillCallback, PruneCallback, kd_loss
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.pruning import PruningSpec


def numpy_kd(s, t, temperature):
    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    p_t, p_s = softmax(t / temperature), softmax(s / temperature)
    return temperature ** 2 * np.mean(np.sum(p_t * np.log(p_t / p_s), axis=1))


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_loss_is_the_formula(temperature):
    s = np.array([[1.0, -2.0, 0.5, 3.0], [0.0, 0.0, 0.0, 0.0], [5.0, 1.0, -1.0, 2.0]])
    t = np.array([[2.0, 0.0, 1.0, -1.0], [1.0, 2.0, 3.0, 4.0], [5.0, 1.0, -1.0, 2.0]])
    got = float(kd_loss(paddle.to_tensor(s, "float32"), paddle.to_tensor(t, "float32"), temperature))
    assert got == pytest.approx(numpy_kd(s, t, temperature), rel=1e-5)
    assert got > 0


def test_kd_loss_gives_the_student_a_gradient_and_the_teacher_none():
    s = paddle.to_tensor([[1.0, 2.0, 0.0]], stop_gradient=False)
    t = paddle.to_tensor([[0.0, 2.0, 1.0]], stop_gradient=False)
    kd_loss(s, t, 2.0).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None


class Record(paddle.callbacks.Callback):
    """Train loss per epoch; eval logs and a student-only evaluation after each eval."""

    def __init__(self, eval_x, eval_y):
        super().__init__()
        self.losses, self.evals, self.alone = [], [], []
        self.eval_x, self.eval_y = eval_x, eval_y

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(np.asarray(logs["loss"]).ravel()[0]))

    def on_eval_end(self, logs=None):
        self.evals.append((float(np.asarray(logs["loss"]).ravel()[0]), logs["acc"]))
        net = self.model.network
        net.eval()
        with paddle.no_grad():
            out = net(self.eval_x)
            loss = float(nn.CrossEntropyLoss()(out, self.eval_y))
            acc = float((out.argmax(1).numpy() == self.eval_y.numpy().ravel()).mean())
        self.alone.append((loss, acc))


class BeforeEvents(paddle.callbacks.Callback):
    """The network's tensors at every epoch's end, before the pruning callback's event
    (placed ahead of it)."""

    def __init__(self):
        super().__init__()
        self.at = {}

    def on_epoch_end(self, epoch, logs=None):
        self.at[epoch] = snapshot(self.model.network)


def fit(cb, opt="momentum", epochs=4, lr=0.05, first=()):
    paddle.seed(0)
    net = Net()
    params = net.parameters()
    optimizer = (paddle.optimizer.Momentum(lr, parameters=params) if opt == "momentum"
                 else paddle.optimizer.Adam(lr / 10, parameters=params))
    model = paddle.Model(net)
    task = nn.CrossEntropyLoss()
    model.prepare(optimizer, task, paddle.metric.Accuracy())
    start = snapshot(net)
    eval_set = dataset(16, seed=5)  # one eval batch: its loss is the logged one
    record = Record(*eval_set.tensors)
    model.fit(dataset(), eval_set, epochs=epochs, batch_size=16, eval_freq=1, verbose=0,
              shuffle=False, callbacks=[*first, cb, record])
    return model, net, start, record, task


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_fit_with_distillation_prunes_trains_and_evaluates_the_student_alone(opt):
    cb = aided(0.5, input_shape=SHAPE, schedule="agp", start_epoch=0, end_epoch=2,
                       distill={"alpha": 0.7, "temperature": 3.0})
    before = BeforeEvents()
    model, net, start, record, task = fit(cb, opt, first=[before])
    distill = cb.distill
    assert widths(net) == {"c1.0": 8, "c2.0": 16, "c3.0": 16}
    assert distill.steps == 3 * 4  # every training batch after the first event (epoch 0)
    assert record.losses[-1] < record.losses[0]
    # the teacher is the network right before the first event, untouched since
    assert same(snapshot(distill.teacher), before.at[0])
    # eval loss and metrics are the student's own (eval batch = the whole eval set)
    for (loss, acc), (own_loss, own_acc) in zip(record.evals, record.alone):
        assert acc == pytest.approx(own_acc, abs=1e-12)
        assert loss == pytest.approx(own_loss, rel=1e-5)
    assert len(record.evals) == 4
    # undone at train end: the user's loss, no hook left
    assert model._loss is task and not net._forward_pre_hooks
    task_value, kd_value = distill.last_terms
    assert float(kd_value) > 0


def test_distilled_training_loss_is_the_weighted_sum():
    paddle.seed(0)
    net = Net()
    teacher = copy.deepcopy(net)
    for p in teacher.parameters():
        p.stop_gradient = True
    x, y = [t[:16] for t in dataset().tensors]
    cb = DistillCallback(teacher=teacher, alpha=0.25, temperature=2.0)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.0, parameters=net.parameters()), nn.CrossEntropyLoss())
    # what the first step must compute, by hand, before fit changes anything
    net.train()
    teacher.eval()
    with paddle.no_grad():
        student_out, teacher_out = net(x), teacher(x)
    expected = 0.75 * float(nn.CrossEntropyLoss()(student_out, y)) \
        + 0.25 * numpy_kd(student_out.numpy(), teacher_out.numpy(), 2.0)
    losses = []

    class Loss(paddle.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            losses.append(float(np.asarray(logs["loss"]).ravel()[0]))
    model.fit(paddle.io.TensorDataset([x, y]), epochs=1, batch_size=16, verbose=0,
              shuffle=False, callbacks=[cb, Loss()])
    assert losses[0] == pytest.approx(expected, rel=1e-4)
    assert cb.teacher is teacher and cb.steps == 1


def test_distillation_under_amp_o1_does_not_break():
    cb = DistillCallback(alpha=0.5)
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), amp_configs="O1")
    model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.steps == 2 and np.isfinite(float(cb.last_terms[1]))


@pytest.mark.parametrize("kwargs, message", [
    (dict(alpha=1.5), r"alpha: 1.5 .*a number in \[0, 1\]"),
    (dict(alpha=True), r"alpha: True"),
    (dict(temperature=0), r"temperature: 0 .*a number in \[0.1, 100\]"),
    (dict(temperature=float("inf")), r"temperature: inf .*a number in \[0.1, 100\]"),
    (dict(temperature=1e-30), r"temperature: 1e-30 "),
    (dict(temperature=float("nan")), r"temperature: nan "),
    (dict(temperature="4"), r"temperature: '4' "),
    (dict(teacher="resnet"), r"teacher: 'resnet' .*paddle.nn.Layer"),
])
def test_bad_arguments_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        DistillCallback(**kwargs)


@pytest.mark.parametrize("distill, message", [
    ({"beta": 1}, r"distill\['beta'\]: 1 .*teacher, alpha, temperature"),
    ({"alpha": -0.1}, r"distill\['alpha'\]: -0.1"),
    ("yes", r"distill: 'yes' .*None, True, a dict"),
])
def test_prune_callback_checks_distill(distill, message):
    with pytest.raises(ConfigError, match=message):
        PruningSpec(0.5, aids={"distill": distill})


def test_prune_callback_distill_forms():
    assert aided(0.5, distill=None).distill is None
    assert aided(0.5, distill=False).distill is None
    assert aided(0.5, distill=True).distill.alpha == 0.5
    own = DistillCallback(temperature=2.0)
    with pytest.deprecated_call(match=r"PruneCallback\(distill=...\) is deprecated"):
        assert PruneCallback(0.5, distill=own).distill is own


def test_a_model_without_loss_is_refused():
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()))
    cb = DistillCallback()
    cb.set_model(model)
    with pytest.raises(SlimError, match="needs a loss"):
        cb.on_train_begin()


def test_the_default_teacher_is_the_network_just_before_the_first_event():
    """From scratch, the network of train begin has learned nothing: the default
    teacher is taken right before the first event, and the loss is the task loss until
    then."""
    cb = aided(0.5, input_shape=SHAPE, prune_epochs=[1, 2], distill=True)
    before = BeforeEvents()
    _, _, start, record, _ = fit(cb, epochs=3, first=[before])
    teacher = snapshot(cb.distill.teacher)
    assert same(teacher, before.at[1])
    assert not same(teacher, start) and not same(teacher, before.at[0])
    assert cb.distill.steps == 4  # the 4 batches of epoch 2, after the first event
    assert all(p.stop_gradient for p in cb.distill.teacher.parameters())


def test_a_run_resumed_after_its_first_event_takes_the_resumed_network(tmp_path):
    def make(**kwargs):
        return aided(0.5, input_shape=SHAPE, prune_epochs=[0, 2], distill=True, **kwargs)

    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss())

    class Stop(paddle.callbacks.Callback):  # as if killed after epoch 1
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1
    model.fit(dataset(), epochs=3, batch_size=16, verbose=0, save_dir=str(tmp_path),
              callbacks=[make(), Stop()])
    net2 = Net()
    model2 = paddle.Model(net2)
    model2.prepare(paddle.optimizer.Momentum(0.05, parameters=net2.parameters()),
                   nn.CrossEntropyLoss())
    cb = make(resume_from=str(tmp_path / "1"))
    resumed = {}

    class AtBegin(paddle.callbacks.Callback):
        def on_train_begin(self, logs=None):
            resumed["state"] = snapshot(net2)
    model2.fit(dataset(), epochs=3, batch_size=16, verbose=0, callbacks=[cb, AtBegin()])
    assert same(snapshot(cb.distill.teacher), resumed["state"])
    assert cb.distill.steps == 4  # the resumed epoch 2


def prepared(net=None):
    """A seeded network (or ``net``), its prepared Model and the task loss."""
    paddle.seed(0)
    net = net or Net()
    model = paddle.Model(net)
    task = nn.CrossEntropyLoss()
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), task)
    return net, model, task


def fit_with_teacher(teacher, net=None, **kwargs):
    net, model, task = prepared(net)
    start = snapshot(net)
    cb = DistillCallback(teacher=teacher if teacher != "self" else net, **kwargs)
    with pytest.raises(SlimError) as err:
        model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    # refused before any change; the callback detached itself
    assert same(snapshot(net), start) and model._loss is task and not net._forward_pre_hooks
    return str(err.value)


class TwoOutputs(nn.Layer):
    def __init__(self, classes):
        super().__init__()
        self.net = Net(classes)

    def forward(self, x):
        return self.net(x), x


@pytest.mark.parametrize("teacher, message", [
    (lambda: nn.Sequential(Net(8), nn.Linear(8, 1)),
     r"its output is shape \[16, 1\], the student's shape \[16, 4\]; expected a teacher whose"),
    (lambda: Net(5), r"shape \[16, 5\], the student's shape \[16, 4\]"),
    (lambda: TwoOutputs(5), r"a tuple of 2 outputs, the first of shape \[16, 5\], the student's shape \[16, 4\]"),
    (lambda: nn.Sequential(nn.Conv2D(1, 4, 3), nn.Flatten()), r"does not run on the student's inputs"),
    (lambda: "self", r"the Net given is the network being trained"),
])
def test_a_teacher_that_does_not_fit_the_student_is_refused_before_training(teacher, message):
    text = fit_with_teacher(teacher())
    assert re.search(message, text) and "\n" not in text


def test_a_teacher_sharing_layers_with_the_student_is_refused():
    net = Net()
    message = fit_with_teacher(nn.Sequential(net.c1, nn.Flatten()), net=net)
    assert "shares parameters with it" in message


def test_a_fitting_teacher_with_more_outputs_is_accepted():
    _, model, _ = prepared()
    cb = DistillCallback(teacher=TwoOutputs(4))
    model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert cb.steps == 2


@pytest.mark.parametrize("twice", ["in the callbacks", "beside a PruneCallback, twice"])
def test_a_callback_passed_twice_adds_the_term_once_and_is_undone(twice):
    net, model, task = prepared()
    cb = DistillCallback(teacher=copy.deepcopy(net))
    callbacks = ([cb, cb] if twice == "in the callbacks"
                 else [PruneCallback(0.5, input_shape=SHAPE, prune_epochs=[0]), cb, cb])
    model.fit(dataset(32), epochs=2, batch_size=16, verbose=0, callbacks=callbacks)
    assert cb.steps == 4  # 2 epochs x 2 batches, each counted once
    assert model._loss is task and not net._forward_pre_hooks


def test_a_fit_that_raised_is_undone_by_the_next_train_begin():
    net, model, task = prepared()
    cb = DistillCallback(teacher=copy.deepcopy(net))

    class Boom(paddle.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[cb, Boom()])
    assert model._loss is not task  # Paddle calls no hook after an exception
    model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, callbacks=[cb])
    assert model._loss is task and not net._forward_pre_hooks and cb.steps == 3
    cb.detach()  # and detach() is safe to call again
    assert model._loss is task
