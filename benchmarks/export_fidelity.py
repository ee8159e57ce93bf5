"""Fidelity column of ``bench_from_export.py``: a short label-free fine-tune on bundled images.

The images are crops of the two photos scikit-learn bundles (``load_sample_images``:
a temple in China and a flower, 640x427 each): square crops of random side (a fifth
to all of the height) at random places, flipped at random, resized to the model's
input and normalized with the ImageNet mean and std (grey for one-channel inputs).
``train`` of them fine-tune the pruned network by distillation from the unpruned
rebuilt one (``prune_model.fine_tune``: Momentum 0.9, lr 0.01, temperature 4, batch
8), the other ``held_out`` measure top-1 agreement with the unpruned network before
and after the fine-tune (``prune_model.fidelity``).
"""
import numpy as np

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def bundled_crops(count: int, size: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """``count`` normalized float32 crops ``[count, channels, size, size]``."""
    from PIL import Image
    from sklearn.datasets import load_sample_images
    photos = load_sample_images().images
    rng = np.random.default_rng(seed)
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        h, w, _ = photo.shape
        side = int(rng.integers(h // 5, h + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = photo[top:top + side, left:left + side]
        crop = crop[:, ::-1] if rng.random() < 0.5 else crop
        image = np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size, size)),
                           dtype="float64") / 255.0
        image = (image - MEAN) / STD
        image = image.mean(-1, keepdims=True) if channels == 1 else image
        crops.append(image.transpose(2, 0, 1))
    return np.stack(crops).astype("float32")


def fine_tuned_fidelity(student, teacher, shape, epochs: int = 1, train: int = 48,
                        held_out: int = 32, lr: float = 0.01) -> dict:
    """Top-1 agreement of ``student`` with ``teacher`` on the held-out crops before and
    after ``epochs`` label-free fine-tune epochs on the others (``student`` changes), and
    how many distinct classes the teacher predicts on them (with random weights often
    few: agreement then means little)."""
    import paddle

    from slim_callbacks.app.prune_model import fidelity, fine_tune
    images = bundled_crops(train + held_out, shape[-1], shape[1])
    evaluation, tuning = images[:held_out], images[held_out:]
    before = fidelity(student, teacher, evaluation, "held-out crops")
    log = fine_tune(student, teacher, tuning, epochs, batch_size=8, lr=lr, temperature=4.0,
                    emit=lambda _: None, progress=False)
    after = fidelity(student, teacher, evaluation, "held-out crops")
    with paddle.no_grad():
        teacher.eval()
        out = teacher(paddle.to_tensor(evaluation))
    top1 = (out[0] if isinstance(out, (list, tuple)) else out).numpy().reshape(len(evaluation), -1)
    return {"teacher_classes": len(set(top1.argmax(1).tolist())),"fidelity_pruned": before.get("top1_agreement"),
            "fidelity_tuned": after.get("top1_agreement"),
            "tuned_max_diff": after["max_abs_diff"], "fine_tune_loss": log["loss"]}
