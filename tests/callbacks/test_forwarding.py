"""Child callbacks get every hook, exactly as if they were passed to fit() directly."""
import paddle
import paddle.nn as nn
from helpers import SHAPE, Net, dataset

from slim_callbacks.callbacks import PruneCallback
from slim_callbacks.callbacks.forwarding import HOOKS, ForwardingCallback


class Recorder(paddle.callbacks.Callback):
    """Records every hook with its non-log arguments (and the model/params it was given)."""

    def __init__(self, name="child", seen=None):
        super().__init__()
        self.name, self.seen = name, [] if seen is None else seen

    def _record(self, hook, *args):
        self.seen.append((self.name, hook, args))


def _recording(hook):
    if hook == "set_model":
        def method(self, model):
            super(Recorder, self).set_model(model)
            self._record(hook, type(model).__name__)
    elif hook == "set_params":
        def method(self, params):
            super(Recorder, self).set_params(params)
            # without where the aids meet their PruneCallback (each run's own objects)
            self._record(hook, tuple(sorted((k, v) for k, v in params.items()
                                            if not k.startswith("slim_callbacks."))))
    else:
        def method(self, *args):
            self._record(hook, *[a for a in args if not isinstance(a, dict) and a is not None])
    return method


for _hook in HOOKS:
    setattr(Recorder, _hook, _recording(_hook))


def run(callbacks, epochs=2):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    model.fit(dataset(32), dataset(16, seed=1), epochs=epochs, batch_size=16, verbose=0,
              shuffle=False, callbacks=callbacks)
    model.evaluate(dataset(16, seed=2), batch_size=16, verbose=0, callbacks=callbacks)
    model.predict(dataset(16, seed=3), batch_size=16, verbose=0, callbacks=callbacks)
    return model


def hooks(seen):
    return [(hook, args) for _, hook, args in seen]


def test_a_child_of_prune_callback_sees_what_a_callback_passed_to_fit_sees():
    direct = Recorder()
    run([PruneCallback(0.5, prune_epochs=[0], input_shape=SHAPE), direct])
    cb = PruneCallback(0.5, prune_epochs=[0], input_shape=SHAPE)
    child = Recorder()
    cb.trailing_callbacks = lambda: [child]  # as the aids of its spec are
    run([cb])
    assert {h for h, _ in hooks(direct.seen)} == set(HOOKS)   # every hook happened
    assert hooks(child.seen) == hooks(direct.seen)
    assert child.model is cb.model and child.params == cb.params


class Parent(ForwardingCallback):
    def __init__(self, seen):
        super().__init__()
        self.seen = seen
        self.first, self.last = Recorder("first", seen), Recorder("last", seen)

    def leading_callbacks(self):
        return [self.first]

    def trailing_callbacks(self):
        return [self.last]

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(("parent", "on_epoch_end", (epoch,)))


def test_leading_children_run_before_the_own_work_and_trailing_ones_after():
    seen = []
    run([Parent(seen)], epochs=1)
    at_epoch_end = [name for name, hook, _ in seen if hook == "on_epoch_end"]
    assert at_epoch_end == ["first", "parent", "last"]
    for name in ("first", "last"):
        assert {h for n, h, _ in seen if n == name} == set(HOOKS)


def test_a_subclass_of_a_subclass_forwards_once():
    class Child(Parent):
        def on_train_begin(self, logs=None):
            self.seen.append(("parent", "on_train_begin", ()))

    seen = []
    parent = Child(seen)
    parent.on_epoch_end(0)
    parent.on_train_begin()
    assert [n for n, _, _ in seen] == ["first", "parent", "last", "first", "parent", "last"]
