"""Checkpoint safety of PruneCallback and the ledger: resume rules, missing or
mismatched files, damaged ledgers, failed writes, and a diverging loss."""
import os
import shutil

import numpy as np
import paddle
import paddle.nn as nn
import pytest
from helpers import SHAPE, Net, dataset

from slim_callbacks.callbacks import FiniteLossGuard, PruneCallback
from slim_callbacks.callbacks import ledger as ledger_mod
from slim_callbacks.callbacks.ledger import load_ledger, load_pruned
from slim_callbacks.core.errors import ConfigError, SlimError

KWARGS = dict(ratios=0.5, prune_epochs=[0, 1], input_shape=SHAPE)


def make_model(seed=0):
    paddle.seed(seed)
    net = Net()
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.Momentum(0.05, parameters=net.parameters()),
                  nn.CrossEntropyLoss())
    return model


def fit(save_dir, epochs=3, data=None, **kwargs):
    model = make_model()
    cb = PruneCallback(**{**KWARGS, **kwargs})
    model.fit(data or dataset(32), epochs=epochs, batch_size=16, verbose=0, shuffle=False,
              save_dir=str(save_dir), callbacks=[cb])
    return model, cb


def contents(directory):
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))}


@pytest.fixture(scope="module")
def run3(tmp_path_factory):
    """A finished 3-epoch run: checkpoints 0, 1, 2, final."""
    path = tmp_path_factory.mktemp("run3")
    fit(path)
    return path


def copy_of(run3, tmp_path, drop=()):
    """The run killed after epoch 1 (checkpoint 2 and final gone), minus ``drop``."""
    out = tmp_path / "ckpt"
    shutil.copytree(run3, out)
    for name in os.listdir(out):
        if name.startswith(("2.", "final.")) or name in drop:
            os.remove(out / name)
    return out


# -- item 4: resume rules ----------------------------------------------------------
def test_resume_refuses_fit_epochs_other_than_the_total(run3, tmp_path):
    ckpt = copy_of(run3, tmp_path)
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt))
    with pytest.raises(ConfigError, match=r"fit\(epochs=...\): 1 .*expected 3, the total"):
        model.fit(dataset(32), epochs=1, batch_size=16, verbose=0, save_dir=str(ckpt),
                  callbacks=[cb])
    assert model.network.c2[0].weight.shape == [32, 16, 3, 3]


def test_resume_of_a_finished_run_is_refused(run3, tmp_path):
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(run3 / "2"))
    with pytest.raises(SlimError, match="last epoch .2. of a 3-epoch run: nothing is left"):
        model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, callbacks=[cb])


def test_resume_from_an_older_checkpoint_never_overwrites_a_later_one(run3, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(run3, ckpt)
    os.remove(ckpt / "2.pruning.json")   # killed while saving 2: it is not protected
    before = contents(ckpt)
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt / "0"))   # 1 exists
    with pytest.raises(SlimError, match=r"ckpt/1 holds a checkpoint of an earlier run"):
        model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, save_dir=str(ckpt),
                  callbacks=[cb])
    assert contents(ckpt) == before


def test_resume_from_a_directory_takes_the_newest_complete_checkpoint(run3, tmp_path):
    ckpt = copy_of(run3, tmp_path)
    assert ledger_mod.latest_checkpoint(str(ckpt)) == str(ckpt / "1")
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt))
    model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, shuffle=False,
              save_dir=str(ckpt), callbacks=[cb])
    assert cb.epoch_offset == 2 and load_ledger(str(ckpt / "2"))["cursor"]["epoch"] == 2
    full = paddle.load(str(run3 / "final.pdparams"))
    for key, value in paddle.load(str(ckpt / "final.pdparams")).items():
        np.testing.assert_allclose(value.numpy(), full[key].numpy(), atol=2e-5, err_msg=key)


# -- item 5: missing files -----------------------------------------------------------
def test_load_pruned_without_weights_is_an_error_not_fresh_weights(run3, tmp_path):
    ckpt = copy_of(run3, tmp_path, drop=("1.pdparams",))
    with pytest.raises(SlimError, match=r"1.pdparams is missing"):
        load_pruned(Net(), str(ckpt / "1"))
    net = Net()
    opt = paddle.optimizer.Momentum(0.05, parameters=net.parameters())
    with pytest.raises(SlimError, match=r"0.pdopt is missing"):
        load_pruned(net, str(copy_of(run3, tmp_path / "b", drop=("0.pdopt",)) / "0"), opt)
    assert net.c2[0].weight.shape == [32, 16, 3, 3]  # refused before the replay
    assert load_pruned(Net(), str(ckpt / "1"), load_weights=False).c2[0].weight.shape[0] == 16


@pytest.mark.parametrize("missing", ["1.pdparams", "1.pdopt"])
def test_resume_without_weights_or_optimizer_state_is_refused(run3, tmp_path, missing):
    ckpt = copy_of(run3, tmp_path, drop=(missing,))
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt / "1"))
    with pytest.raises(SlimError, match=f"{missing} is missing"):
        model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, callbacks=[cb])
    assert model.network.c2[0].weight.shape == [32, 16, 3, 3]


def test_reset_optimizer_opts_in_to_a_fresh_optimizer_state(run3, tmp_path, caplog):
    ckpt = copy_of(run3, tmp_path, drop=("1.pdopt",))
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt / "1"), reset_optimizer=True)
    model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, save_dir=str(ckpt), callbacks=[cb])
    assert "optimizer state starts afresh" in caplog.text
    assert model.network.c2[0].weight.shape == [16, 8, 3, 3]


# -- item 13: damaged ledgers, mismatched weights, failed writes --------------------
@pytest.mark.parametrize("text, match", [
    ("", "unreadable JSON"), ('{"format": "slim_callbacks.callbacks.ledger/1", "plan": {', "unreadable JSON"),
    ("[1, 2]", "'list' is not allowed"),
    ('{"format": "slim_callbacks.callbacks.ledger/1", "fingerprint": "x", "history": [], '
     '"cursor": {"epoch": 0}, "original_widths": {}}', r": plan: None is not allowed; expected a dict"),
])
def test_a_damaged_ledger_is_a_one_line_config_error(tmp_path, text, match):
    (tmp_path / "0.pruning.json").write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_pruned(Net(), str(tmp_path / "0"))
    assert str(tmp_path / "0.pruning.json") in str(info.value) and "\n" not in str(info.value)


def test_weights_of_another_epoch_beside_a_ledger_are_refused(run3, tmp_path):
    ckpt = copy_of(run3, tmp_path)
    shutil.copy(ckpt / "1.pdparams", ckpt / "0.pdparams")   # same shapes, other epoch
    with pytest.raises(SlimError, match=r"0.pdparams is not the file its ledger .* was written with"):
        load_pruned(Net(), str(ckpt / "0"))
    model = make_model()
    cb = PruneCallback(**KWARGS, resume_from=str(ckpt / "0"))
    with pytest.raises(SlimError, match="weights of another epoch or run"):
        model.fit(dataset(32), epochs=3, batch_size=16, verbose=0, callbacks=[cb])


def test_a_failed_ledger_write_keeps_the_old_file_and_leaves_no_tmp(tmp_path, monkeypatch):
    ledger_mod.write_atomic(str(tmp_path / "a.json"), "old")

    def disk_full(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(ledger_mod.os, "replace", disk_full)
    with pytest.raises(SlimError, match=r"could not write .*a.json: No space left on device"):
        ledger_mod.write_atomic(str(tmp_path / "a.json"), "new")
    assert os.listdir(tmp_path) == ["a.json"] and (tmp_path / "a.json").read_text() == "old"


# -- item 7: a diverging run ------------------------------------------------------------
def test_one_nan_image_stops_training_before_its_checkpoint(tmp_path):
    x, y = (t.numpy() for t in dataset(32).tensors)
    x[20, 0, 0, 0] = np.nan   # the loss stays finite (ReLU after BN), the weights do not
    data = paddle.io.TensorDataset([paddle.to_tensor(x), paddle.to_tensor(y)])
    with pytest.raises(SlimError, match=r"c1.0.weight holds NaN/Inf after epoch 0: training "
                                        r"stopped before saving"):
        fit(tmp_path, data=data)
    assert os.listdir(tmp_path) == []   # no checkpoint of the diverged epoch, no final


def test_a_non_finite_loss_names_epoch_and_step():
    guard = FiniteLossGuard()
    guard.epoch_offset = 3
    guard.on_epoch_begin(1)
    guard.on_train_batch_end(6, {"loss": [np.float32(0.7)]})
    with pytest.raises(SlimError, match=r"training loss is \[inf\] at epoch 4, step 7"):
        guard.on_train_batch_end(7, {"loss": [np.float32(np.inf)]})
