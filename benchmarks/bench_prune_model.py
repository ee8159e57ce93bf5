"""Does ``slim-callbacks prune-model`` keep the accuracy of a trained export, without labels?

    nice python benchmarks/bench_prune_model.py [--epochs 16] [--fine-tune 0 10]
        [--target macs=0.5] [--out output/bench_prune_model]

1. The quickstart network (MobileNetV1 x0.25 on scikit-learn's digits, 32x32) is trained
   normally, without pruning (``slim-callbacks run quickstart -o pruning=null``), which
   exports it to ``<out>/run/inference``.
2. The digits images are written as PNG files: the 1,437 training images (no labels)
   are the folder ``prune-model`` gets; the 360 evaluation images are kept with their
   labels to measure top-1 only.
3. ``slim-callbacks prune-model <out>/run/inference --target ... --data <train pngs>
   --epochs N --mean M --std S --no-crop`` for each N of ``--fine-tune``.
4. Top-1 of the original and each pruned export in Paddle Inference on the 360
   evaluation images, and their top-1 agreement.

Writes ``prune_model.json`` to ``--out`` and prints a markdown table.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def write_digits(folder: str):
    """The quickstart's digits, upscaled as the recipe does, as 8-bit PNGs: the
    training images under ``folder/train`` and ``(eval images, labels)`` returned,
    with the mean and std of the training images (pixels in [0, 1])."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from slim_callbacks.app.array_data import EVAL_FRACTION, SPLIT_SEED, Preprocess
    digits = load_digits()
    images = Preprocess((8, 8), (1, 32, 32))(digits.images.astype(np.float32)[:, None] / 16.0)
    labels = digits.target.astype(np.int64)
    train_idx, eval_idx = train_test_split(np.arange(len(labels)), test_size=EVAL_FRACTION,
                                           stratify=labels, random_state=SPLIT_SEED)
    pixels = np.clip(np.round(images[:, 0] * 255), 0, 255).astype("uint8")
    os.makedirs(os.path.join(folder, "train"), exist_ok=True)
    for i in train_idx:
        Image.fromarray(pixels[i], "L").save(os.path.join(folder, "train", f"{i:04d}.png"))
    train = pixels[train_idx].astype("float32") / 255
    mean, std = float(train.mean()), float(train.std())
    evaluation = (pixels[eval_idx].astype("float32") / 255 - mean) / std
    return np.repeat(evaluation[:, None], 3, axis=1), labels[eval_idx], mean, std


def top1(prefix: str, images: np.ndarray, labels: np.ndarray):
    """(top-1 accuracy, predictions) of the exported model in Paddle Inference."""
    from slim_callbacks.deploy.runtime import predictor, run
    pred = predictor(prefix, threads=1)
    out = np.concatenate([run(pred, [images[i:i + 1]])[0] for i in range(len(images))])
    predictions = out.argmax(1)
    return float((predictions == labels).mean()), predictions


def command(args, **env):
    print("$", " ".join(args), flush=True)
    subprocess.run(args, check=True, env={**os.environ, **env})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=16, help="training epochs of the original")
    parser.add_argument("--fine-tune", type=int, nargs="+", default=[0, 10],
                        help="label-free fine-tune epochs, one prune-model per value")
    parser.add_argument("--target", default="macs=0.5")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--out", default=os.path.join("output", "bench_prune_model"))
    args = parser.parse_args()
    cli = [sys.executable, "-m", "slim_callbacks"]
    run_dir = os.path.join(args.out, "run")
    started = time.time()
    if not os.path.isfile(os.path.join(run_dir, "inference", "model.json")):
        command([*cli, "run", "quickstart", "-o", "pruning=null", "-o", f"train.epochs={args.epochs}",
                 "--output-dir", run_dir, "--no-latency", "-q"])
    train_s = time.time() - started
    images, labels, mean, std = write_digits(os.path.join(args.out, "digits"))
    original = os.path.join(run_dir, "inference", "model")
    base_acc, base_pred = top1(original, images, labels)
    rows = [{"model": "original export", "top1": base_acc, "agreement": 1.0}]
    for epochs in args.fine_tune:
        out = os.path.join(args.out, f"pruned-{epochs}")
        start = time.time()
        command([*cli, "prune-model", os.path.join(run_dir, "inference"), "--target", args.target,
                 "--data", os.path.join(args.out, "digits", "train"), "--epochs", str(epochs),
                 "--lr", str(args.lr), "--mean", str(mean), "--std", str(std), "--no-crop",
                 "--no-latency", "--out", out, "-q"])
        with open(os.path.join(out, "summary.json")) as f:
            summary = json.load(f)
        acc, pred = top1(os.path.join(out, "model"), images, labels)
        rows.append({"model": f"pruned, {epochs} fine-tune epochs", "top1": acc,
                     "agreement": float((pred == base_pred).mean()),
                     "macs_cut": summary["flops_reduction"],
                     "held_out_agreement": summary["fidelity"].get("top1_agreement"),
                     "seconds": round(time.time() - start, 1)})
    result = {"target": args.target, "train_s": round(train_s, 1), "eval_images": len(labels),
              "rows": rows}
    with open(os.path.join(args.out, "prune_model.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("| model | MACs cut | top-1 (360 eval images) | top-1 agreement with the original "
          "| prune-model s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r.get('macs_cut', 0):.1%} | {r['top1']:.2%} | "
              f"{r['agreement']:.2%} | {r.get('seconds', '')} |")


if __name__ == "__main__":
    main()
