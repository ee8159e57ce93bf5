"""PruneTrainerCallback driven by PaddleNLP's real Trainer on tiny synthetic data
(skipped without paddlenlp)."""
import os

import numpy as np
import paddle
import pytest

paddlenlp = pytest.importorskip("paddlenlp")

from paddlenlp.trainer import Trainer, TrainingArguments  # noqa: E402
from paddlenlp.trainer.integrations import VisualDLCallback  # noqa: E402
from paddlenlp.transformers import ErnieConfig, ErnieForSequenceClassification  # noqa: E402

from slim_callbacks.integrations.paddlenlp import PruneTrainerCallback  # noqa: E402

TOKENS = 8


def tiny_ernie():
    paddle.seed(0)
    return ErnieForSequenceClassification(ErnieConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=32, max_position_embeddings=32, num_classes=2))


def test_the_trainer_prunes_after_the_scheduled_epoch_and_trains_on(tmp_path):
    model = tiny_ernie()
    rng = np.random.default_rng(0)
    data = [{"input_ids": rng.integers(1, 50, TOKENS).tolist(), "labels": int(rng.integers(0, 2))}
            for _ in range(8)]
    callback = PruneTrainerCallback({"input_ids": {"shape": [1, TOKENS], "dtype": "int64"}},
                                    ratios=0.5, schedule={0: 0.5}, structure={"attention": "heads"})
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
                             save_strategy="no", disable_tqdm=True, learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.remove_callback(VisualDLCallback)  # its hparams writer fails on bools
    result = trainer.train()
    assert [event["epoch"] for event in callback.pruner.history] == [0]
    assert model.ernie.embeddings.word_embeddings.weight.shape == [50, 8]
    assert model.ernie.encoder.layers[1].self_attn.num_heads == 2
    assert np.isfinite(result.training_loss) and result.global_step == 4
    moments = [state for name, states in trainer.optimizer._accumulators.items() if "moment" in name
               for state in states.values()]
    assert moments and {tuple(m.shape) for m in moments} <= {tuple(p.shape) for p in model.parameters()}


def test_a_ledger_beside_each_checkpoint_reloads_the_pruned_model(tmp_path):
    from slim_callbacks import load_pruned

    model = tiny_ernie()
    rng = np.random.default_rng(1)
    data = [{"input_ids": rng.integers(1, 50, TOKENS).tolist(), "labels": int(rng.integers(0, 2))}
            for _ in range(8)]
    callback = PruneTrainerCallback({"input_ids": {"shape": [1, TOKENS], "dtype": "int64"}},
                                    ratios=0.5, schedule={0: 0.5}, structure={"attention": "heads"})
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=2, per_device_train_batch_size=4,
                             save_strategy="epoch", disable_tqdm=True, learning_rate=1e-3)
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback])
    trainer.remove_callback(VisualDLCallback)
    trainer.train()
    folders = sorted(f for f in os.listdir(tmp_path) if f.startswith("checkpoint-"))
    assert folders == ["checkpoint-2", "checkpoint-4"]
    assert all(os.path.exists(tmp_path / f / "model_state.pruning.json") for f in folders)
    model.eval()
    ids = paddle.to_tensor(rng.integers(1, 50, [3, TOKENS]))
    expected = model(ids).numpy()

    last = str(tmp_path / "checkpoint-4")
    fresh = ErnieForSequenceClassification(ErnieConfig.from_pretrained(last))  # the original widths
    assert fresh.ernie.embeddings.word_embeddings.weight.shape == [50, 16]
    load_pruned(fresh, os.path.join(last, "model_state"))
    assert fresh.ernie.embeddings.word_embeddings.weight.shape == [50, 8]
    assert fresh.ernie.encoder.layers[1].self_attn.num_heads == 2
    fresh.eval()
    np.testing.assert_array_equal(fresh(ids).numpy(), expected)
