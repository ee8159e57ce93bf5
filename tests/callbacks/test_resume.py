"""Ledger, load_pruned, resume after SIGKILL, and paddle.jit.save of a pruned network."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, TESTS, Net, aided, dataset

from slim_callbacks.callbacks import PruneCallback, VisualDLLogger
from slim_callbacks.callbacks.ledger import file_digest, load_ledger, load_pruned
from slim_callbacks.core.errors import SlimError

CHILD = textwrap.dedent("""
    import json, os, signal, sys
    sys.path.insert(0, {tests!r})
    import numpy as np, paddle, paddle.nn as nn
    from slim_callbacks.callbacks import PruneCallback, VisualDLLogger
    from helpers import Net, dataset, widths, SHAPE

    mode, save_dir, out, kill_at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

    class KillAtEpochBegin(paddle.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch + cb.epoch_offset == kill_at:  # the epoch before is saved
                os.kill(os.getpid(), signal.SIGKILL)

    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    opt = paddle.optimizer.{opt}(0.01, parameters=net.parameters())
    model.prepare(opt, nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    kwargs = dict(ratios=0.5, criterion="fpgm", schedule="agp", start_epoch=1, end_epoch=3,
                  input_shape=SHAPE)
    if mode == "resume":
        kwargs["resume_from"] = save_dir  # the newest complete checkpoint
    cb = PruneCallback(**kwargs)
    model.fit(dataset(64), epochs=5, batch_size=16, verbose=0, shuffle=False,
              save_dir=save_dir, callbacks=[cb, KillAtEpochBegin()])
    json.dump({{"widths": widths(net), "events": [h["epoch"] for h in cb.history],
               "targets": [h["target"] for h in cb.history],
               "weights": {{k: v.numpy().tolist() for k, v in net.state_dict().items()}}}},
              open(out, "w"))
""")


def run_child(tmp_path, mode, save_dir, opt, kill_at=-1):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=TESTS, opt=opt))
    out = tmp_path / f"{mode}.json"
    proc = subprocess.run([sys.executable, str(script), mode, str(save_dir), str(out),
                           str(kill_at)], capture_output=True, text=True, timeout=120)
    return proc, out


def digests(directory):
    return {name: file_digest(str(directory / name)) for name in os.listdir(directory)}


@pytest.mark.parametrize("opt", ["Momentum", "Adam"])
def test_killed_twice_and_resumed_with_the_same_command_matches_an_uninterrupted_run(tmp_path, opt):
    killed_dir, full_dir = tmp_path / "killed", tmp_path / "full"
    proc, out = run_child(tmp_path, "kill", killed_dir, opt, kill_at=2)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert not out.exists()
    assert sorted(os.listdir(killed_dir)) == ["0.pdopt", "0.pdparams", "0.pruning.json",
                                              "1.pdopt", "1.pdparams", "1.pruning.json"]
    ledger = load_ledger(str(killed_dir / "1"))
    assert ledger["cursor"]["epoch"] == 1 and ledger["cursor"]["done"] == [1]
    assert ledger["cursor"]["remaining"] == [2, 3] and ledger["epochs"] == 5
    first_session = digests(killed_dir)

    # the same resume command twice: killed again at global epoch 3, then to the end
    proc, _ = run_child(tmp_path, "resume", killed_dir, opt, kill_at=3)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert load_ledger(str(killed_dir / "2"))["cursor"]["epoch"] == 2  # global names
    proc, resumed_out = run_child(tmp_path, "resume", killed_dir, opt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc, full_out = run_child(tmp_path, "full", full_dir, opt)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(os.listdir(killed_dir)) == sorted(os.listdir(full_dir))  # 0..4 and final
    assert {k: digests(killed_dir)[k] for k in first_session} == first_session  # untouched
    resumed, full = json.loads(resumed_out.read_text()), json.loads(full_out.read_text())
    assert resumed["events"] == full["events"] == [1, 2, 3]
    assert resumed["targets"] == full["targets"]
    assert resumed["widths"] == full["widths"] == {"c1.0": 8, "c2.0": 16, "c3.0": 16}
    for key, value in full["weights"].items():  # same data order, same optimizer state
        np.testing.assert_allclose(resumed["weights"][key], value, atol=2e-4, err_msg=key)
    # the resumed run's checkpoints carry the global history
    final = load_ledger(str(killed_dir / "final"))
    assert [h["epoch"] for h in final["history"]] == [1, 2, 3]
    assert final["cursor"]["epoch"] == 4


def trained(tmp_path, epochs=2, resume_from=None):
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss(), paddle.metric.Accuracy())
    cb = PruneCallback({"c2": 0.5, "c3": 0.75}, prune_epochs=list(range(epochs)), input_shape=SHAPE,
                       resume_from=resume_from)
    model.fit(dataset(32), epochs=epochs, batch_size=16, verbose=0, save_dir=str(tmp_path),
              callbacks=[cb])
    return model, cb


def test_load_pruned_rebuilds_the_trained_model(tmp_path):
    model, cb = trained(tmp_path)
    x = paddle.randn([4] + SHAPE[1:])
    model.network.eval()
    expected = model.network(x).numpy()
    fresh = load_pruned(Net(), str(tmp_path / "final"))
    fresh.eval()
    np.testing.assert_allclose(fresh(x).numpy(), expected, rtol=1e-5, atol=1e-5)
    assert fresh.c3[0]._out_channels == 8 and fresh.c2[0].weight.shape == [16, 16, 3, 3]
    # an intermediate checkpoint replays only the events before it
    mid = load_pruned(Net(), str(tmp_path / "0"))
    assert mid.c3[0].weight.shape[0] == 32 - round(32 * 0.375)


def test_load_pruned_loads_the_optimizer_state_under_new_names(tmp_path):
    model, _ = trained(tmp_path)
    fresh = Net()  # built later in this process: other auto-generated tensor names
    opt = paddle.optimizer.Momentum(0.05, parameters=fresh.parameters())
    load_pruned(fresh, str(tmp_path / "final"), optimizer=opt)
    name = fresh.c2[0].weight.name
    assert name != model.network.c2[0].weight.name
    velocity = [v for k, v in opt._accumulators_holder.items() if k.startswith(name + "_velocity")]
    assert len(velocity) == 1 and list(velocity[0].shape) == [16, 16, 3, 3]


def test_load_pruned_refuses_another_architecture_or_a_pruned_network(tmp_path):
    trained(tmp_path, epochs=1)
    with pytest.raises(SlimError, match="another architecture"):
        load_pruned(Net(classes=5), str(tmp_path / "final"))
    net = load_pruned(Net(), str(tmp_path / "final"))
    with pytest.raises(SlimError, match="already pruned"):
        load_pruned(net, str(tmp_path / "final"))
    with pytest.raises(SlimError, match="no pruning ledger"):
        load_pruned(Net(), str(tmp_path / "missing"))


def test_resume_with_other_arguments_fails_before_training(tmp_path):
    trained(tmp_path, epochs=2)
    for name in ("1.pdparams", "1.pdopt", "1.pruning.json"):
        os.remove(tmp_path / name)  # resume from 0 as if killed during epoch 1
    paddle.seed(0)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()), nn.CrossEntropyLoss())
    cb = PruneCallback(0.9, prune_epochs=[0, 1], input_shape=SHAPE, resume_from=str(tmp_path / "0"))
    with pytest.raises(SlimError, match="differ"):
        model.fit(dataset(16), epochs=2, batch_size=16, verbose=0, callbacks=[cb])
    assert net.c2[0].weight.shape == [32, 16, 3, 3]


def test_jit_save_of_a_pruned_network_is_small(tmp_path):
    model, _ = trained(tmp_path)
    spec = [paddle.static.InputSpec([None] + SHAPE[1:], "float32", "x")]
    paddle.seed(0)
    full = Net()
    full.eval()
    paddle.jit.save(full, str(tmp_path / "full/inference"), input_spec=spec)
    model.network.eval()
    paddle.jit.save(model.network, str(tmp_path / "small/inference"), input_spec=spec)
    small_size = os.path.getsize(tmp_path / "small/inference.pdiparams")
    full_size = os.path.getsize(tmp_path / "full/inference.pdiparams")
    assert small_size < 0.5 * full_size
    loaded = paddle.jit.load(str(tmp_path / "small/inference"))
    shapes = sorted(tuple(p.shape) for p in loaded.parameters())
    assert (16, 16, 3, 3) in shapes and (8, 16, 3, 3) in shapes and (32, 32, 3, 3) not in shapes
    x = paddle.randn([2] + SHAPE[1:])
    np.testing.assert_allclose(loaded(x).numpy(), model.network(x).numpy(), rtol=1e-4, atol=1e-5)


def test_in_process_resume_continues_epochs_bn_l1_and_visualdl_steps(tmp_path):
    from helpers import read_visualdl as read

    def model_and(cb, epochs, save_dir, *aids):
        paddle.seed(0)
        net = Net()
        model = paddle.Model(net)
        model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                      nn.CrossEntropyLoss(), paddle.metric.Accuracy())
        model.fit(dataset(32), epochs=epochs, batch_size=16, verbose=0, save_dir=str(save_dir),
                  shuffle=False, callbacks=[cb, *aids])
        return net

    kwargs = dict(ratios=0.5, criterion="slim", prune_epochs=[0, 2], input_shape=SHAPE, bn_l1=1e-3)
    full = model_and(aided(**kwargs), 3, tmp_path / "a")  # resume from its epoch 0
    cb = aided(**kwargs, resume_from=str(tmp_path / "a" / "0"))
    net = model_and(cb, 3, tmp_path / "b", VisualDLLogger(str(tmp_path / "vdl"), log_freq=1))  # epochs 1, 2
    assert cb.epoch_offset == 1 and [h["epoch"] for h in cb.history] == [0, 2]
    assert net.c2[0].weight.shape[0] == 16
    # built second in this process, the network has other tensor names than the
    # checkpoint's; the optimizer state (Momentum velocity) still followed: same weights
    assert net.c2[0].weight.name != full.c2[0].weight.name
    for key, value in full.state_dict().items():
        np.testing.assert_allclose(net.state_dict()[key].numpy(), value.numpy(), atol=2e-4, err_msg=key)
    assert cb.bn_l1.epoch_offset == 1 and cb.bn_l1.end_epoch == 3
    scalars, _ = read(str(tmp_path / "vdl"))
    assert [s for s, _ in scalars["train/loss"]] == [3, 4, 5, 6]  # 2 steps/epoch, from epoch 1
    assert [s for s, _ in scalars["model/params"]] == [1, 2]
    # checkpoints of the resumed fit are named by global epoch
    assert sorted(os.listdir(tmp_path / "b")) == ["1.pdopt", "1.pdparams", "1.pruning.json",
                                                  "2.pdopt", "2.pdparams", "2.pruning.json",
                                                  "final.pdopt", "final.pdparams",
                                                  "final.pruning.json"]
    assert load_ledger(str(tmp_path / "b" / "2"))["cursor"]["epoch"] == 2


def altered(pdparams):
    """The state dict in ``pdparams`` with other classifier weights (same shapes)."""
    state = paddle.load(pdparams)
    state["fc.weight"] = state["fc.weight"] * 0.5
    return state


def test_a_safetensors_holding_other_weights_is_refused_and_a_copy_is_loaded(tmp_path):
    from slim_callbacks.core.weights import save_safetensors
    model, _ = trained(tmp_path)
    final, stray = str(tmp_path / "final"), str(tmp_path / "final.safetensors")
    save_safetensors(altered(final + ".pdparams"), stray)
    fresh = Net()
    with pytest.raises(SlimError, match=r"final.safetensors holds other weights than .*"
                                        r"final.pdparams, the ones its ledger .*final"
                                        r".pruning.json was written with: delete or move"):
        load_pruned(fresh, final)
    assert fresh.c2[0].weight.shape == [32, 16, 3, 3]  # refused before anything changed
    # a copy of the checkpoint's own weights is what the ledger vouches for
    save_safetensors(paddle.load(final + ".pdparams"), stray)
    os.remove(final + ".pdparams")
    x = paddle.randn([2] + SHAPE[1:])
    copy = load_pruned(Net(), final)
    model.network.eval()
    copy.eval()
    np.testing.assert_allclose(copy(x).numpy(), model.network(x).numpy(), rtol=1e-5, atol=1e-6)
    # a ledger of an older version vouches only for the .pdparams
    ledger = json.loads((tmp_path / "final.pruning.json").read_text())
    del ledger["tensors_sha256"]
    (tmp_path / "final.pruning.json").write_text(json.dumps(ledger))
    with pytest.raises(SlimError, match="final.safetensors is not vouched for by .*move .* away"):
        load_pruned(Net(), final)


def test_resume_checks_the_pdparams_it_loads_whatever_safetensors_lies_beside(tmp_path):
    from slim_callbacks.core.weights import save_safetensors
    trained(tmp_path, epochs=3)
    save_safetensors(paddle.load(str(tmp_path / "1.pdparams")), str(tmp_path / "1.safetensors"))
    paddle.save(altered(str(tmp_path / "1.pdparams")), str(tmp_path / "1.pdparams"))
    with pytest.raises(SlimError, match=r"1.pdparams is not the file its ledger"):
        trained(tmp_path, epochs=3, resume_from=str(tmp_path / "1"))
