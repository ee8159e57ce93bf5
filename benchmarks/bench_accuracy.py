"""Accuracy evidence: top-1 after pruning inside fit vs one-shot.

MobileNetV1 x0.25 on the bundled digits at 32x32 (``recipes/quickstart.yaml``: its
data, network, optimizer and cosine LR; the 13 pointwise convs, one uniform ratio
bisected on the MACs target), the SAME number of epochs for every method, seeds 0-2,
MACs targets -50% and -75%. One process per cell (method x ratio x seed), run one at
a time; each finished cell is written to the results JSON at once, so an interrupted
matrix resumes where it stopped (finished cells are skipped). Methods
(``E`` = ``--epochs``; the AGP events are at epochs 2, 4, ..., ``E // 2``, 0-based):

- ``unpruned``: no pruning (one cell per seed, shown in both ratio columns);
- ``oneshot_start``: one-shot at the end of epoch 0, then fine-tune (PaddleSlim's
  prune-then-fine-tune flow within the same epochs);
- ``oneshot_mid``: one-shot at the last AGP epoch (same fine-tune length as AGP);
- ``agp``, ``agp_recal`` (+ ``recalibrate_bn 8``), ``agp_distill`` (+ distillation
  with the default teacher, alpha 0.5, T 4: a copy of the network taken right before
  the first event); ``agp_distill_trained`` (the same with ``pruning.distill.teacher``:
  the ``unpruned`` cell's final weights of the same seed, saved under
  ``output/bench_accuracy/teachers/``, so run ``unpruned`` first);
- ``slim`` (BN-scale L1 sparsity 1e-4 + BN-scale criterion + BN-shift fold, AGP),
  ``opt_slim`` (the same with the optimal-threshold selector; its ratio, a bound, is
  the uniform ratio L1 finds for the target: it cannot plan a FLOPs target on initial
  BN scales), ``taylor`` (AGP);
- ``budget``: AGP + ``recalibrate_bn 8`` + ``max_metric_drop`` (``--budget``).

Each cell records the top-1 of the network the fit ends with (``top1``, an evaluation
after ``fit``), the eval top-1 after every epoch (``curve``), the eval right before each
event (a probe ahead of PruneCallback), the MACs cut reached, and its wall time.
``report`` prints the table (mean +- sample std over seeds, min-max), the eval drop at
AGP events with and without recalibration, writes a PNG of the per-epoch eval curves
(matplotlib, optional) and VisualDL scalars (``--visualdl DIR``).

    nice python benchmarks/bench_accuracy.py run --results benchmarks/results/accuracy.json
    python benchmarks/bench_accuracy.py run --methods agp taylor --seeds 0 --ratios 0.5
    python benchmarks/bench_accuracy.py report --png benchmarks/results/accuracy_curves.png
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RECIPE = os.path.join(ROOT, "recipes", "quickstart.yaml")
DEFAULT_RESULTS = os.path.join(HERE, "results", "accuracy.json")
METHODS = ("unpruned", "oneshot_start", "oneshot_mid", "agp", "agp_recal", "agp_distill",
           "agp_distill_trained", "slim", "opt_slim", "taylor", "budget")
LABELS = {"unpruned": "unpruned", "oneshot_start": "one-shot @0 + fine-tune",
          "oneshot_mid": "one-shot mid-training", "agp": "AGP (L1)",
          "agp_recal": "AGP + BN recal", "agp_distill": "AGP + distillation",
          "agp_distill_trained": "AGP + distillation (trained teacher)",
          "slim": "Slim (BN-L1 + fold)", "opt_slim": "OptSlim", "taylor": "Taylor (AGP)",
          "budget": "AGP + recal + budget"}


def agp_schedule(epochs: int) -> dict:
    return {"kind": "agp", "start_epoch": 2, "end_epoch": max(2, epochs // 2), "frequency": 2}


TEACHERS = os.path.join(ROOT, "output", "bench_accuracy", "teachers")


def teacher_path(seed: int) -> str:
    """Where the ``unpruned`` cell of ``seed`` leaves its trained weights."""
    return os.path.join(TEACHERS, f"seed{seed}.pdparams")


def pruning_section(method: str, ratio: float, epochs: int, budget: float, seed: int = 0) -> dict:
    """The recipe's ``pruning:`` section for one method (None: unpruned)."""
    if method == "unpruned":
        return None
    agp = agp_schedule(epochs)
    section = {"criterion": "l1_norm", "strategy": "uniform", "target_flops_reduction": ratio,
               "layers": ["conv*._pointwise_conv*"], "schedule": agp}
    extra = {
        "oneshot_start": {"schedule": {"kind": "oneshot", "epoch": 0}},
        "oneshot_mid": {"schedule": {"kind": "oneshot", "epoch": agp["end_epoch"]}},
        "agp": {},
        "agp_recal": {"recalibrate_bn": 8},
        "agp_distill": {"distill": {"alpha": 0.5, "temperature": 4.0}},
        "agp_distill_trained": {"distill": {"alpha": 0.5, "temperature": 4.0,
                                            "teacher": {"pretrained": teacher_path(seed)}}},
        "slim": {"criterion": "slim", "bn_l1": 1e-4},
        "opt_slim": {"criterion": "opt_slim", "bn_l1": 1e-4},
        "taylor": {"criterion": "taylor"},
        "budget": {"recalibrate_bn": 8, "max_metric_drop": budget},
    }[method]
    section.update(extra)
    if method == "opt_slim":
        # its selector cannot plan a FLOPs target on initial BN scales (all 1: nothing
        # goes); it gets the uniform ratio L1 finds for the target, as a bound
        section.update(ratios=l1_uniform_ratio(ratio), target_flops_reduction=None)
    return section


def l1_uniform_ratio(target: float) -> float:
    """The uniform ratio of the pointwise convs that removes ``target`` of the MACs."""
    import paddle

    from slim_callbacks.analysis.uniform_strategy import uniform_ratio
    network = paddle.vision.models.mobilenet_v1(scale=0.25, num_classes=10)
    return uniform_ratio(network, [1, 3, 32, 32], target, ["conv*._pointwise_conv*"])


def cell_recipe(method: str, ratio: float, seed: int, epochs: int, budget: float, out: str,
                log_dir=None) -> dict:
    """The quickstart recipe of one cell, as a mapping for ``load_job``."""
    with open(RECIPE) as f:
        raw = yaml.safe_load(f)
    raw.update(name=f"acc-{method}", output_dir=out, checkpoint={"save_freq": 10 ** 6})
    raw["train"].update(epochs=epochs, seed=seed)
    raw["logging"] = {"log_freq": 10 ** 6, "visualdl": log_dir is not None,
                      **({"log_dir": log_dir} if log_dir else {})}
    section = pruning_section(method, ratio, epochs, budget, seed)
    if section is None:
        raw.pop("pruning", None)
    else:
        raw["pruning"] = section
    return raw


def cell_key(method: str, ratio: float, seed: int) -> str:
    return f"{method}|{ratio:g}|{seed}"


# ------------------------------------------------------------------- one cell
def run_cell(method: str, ratio: float, seed: int, epochs: int, budget: float,
             log_dir=None) -> dict:
    """Trains one cell in this process; returns its record."""
    warnings.filterwarnings("ignore")
    import paddle
    import paddle.nn as nn

    from slim_callbacks.analysis.flops import profile
    from slim_callbacks.app import builders
    from slim_callbacks.app.data import build_datasets
    from slim_callbacks.app.job import load_job
    from slim_callbacks.app.runner import eval_accuracy
    from slim_callbacks.callbacks import PruneCallback
    sys.path.insert(0, HERE)
    from bench_distill import AfterEpoch, BeforeEvent

    job = load_job(cell_recipe(method, ratio, seed, epochs, budget,
                               tempfile.mkdtemp(prefix="bench-acc-"), log_dir),
                   untrained_teacher=True)
    recipe = job.recipe
    builders.seed_from(recipe)
    network = builders.build_network(recipe)
    callbacks = builders.build_callbacks(job, builders.recipe_pruner(job, network), verbose=0)
    prune = next((c for c in callbacks if isinstance(c, PruneCallback)), None)
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape)
    before, after = BeforeEvent(eval_data), AfterEpoch()
    model = paddle.Model(network, inputs=[paddle.static.InputSpec(
        [None, *recipe.input_shape[1:]], "float32", "image")])
    model.prepare(builders.build_optimizer(recipe, network), nn.CrossEntropyLoss(),
                  builders.accuracy_metric(recipe.data.num_classes))
    macs0 = profile(network, list(recipe.input_shape))["macs"]
    started = time.time()
    model.fit(train_data, eval_data, epochs=epochs, batch_size=recipe.train.batch_size,
              eval_freq=1, verbose=0, shuffle=True, callbacks=[before] + callbacks + [after])
    seconds = time.time() - started
    # the network the fit ends with; differs from the last epoch's eval when the budget
    # undid an attempt at the last epoch (that eval saw the refused structure)
    final = eval_accuracy(model.evaluate(eval_data, batch_size=256, verbose=0))["acc"]
    if method == "unpruned":  # the trained teacher of agp_distill_trained
        os.makedirs(TEACHERS, exist_ok=True)
        paddle.save(network.state_dict(), teacher_path(seed))
    macs = profile(network, list(recipe.input_shape))["macs"]
    events = [] if prune is None else [h["epoch"] for h in prune.history]
    record = {"method": method, "ratio": ratio, "seed": seed, "epochs": epochs,
              "top1": final, "curve": [after.acc[e] for e in sorted(after.acc)],
              "before_event": {str(e): before.acc[e] for e in events},
              "events": events, "macs_cut": 1 - macs / macs0, "seconds": round(seconds, 1)}
    if prune is not None and prune.budget is not None:
        record["budget"] = prune.budget.to_dict()
    return record


# ------------------------------------------------------------------- the matrix
def load_results(path: str) -> dict:
    if os.path.isfile(path):
        with open(path) as f:
            return json.load(f)
    return {"cells": {}}


def save_results(path: str, results: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def planned_cells(args):
    for seed in args.seeds:
        for method in args.methods:
            for ratio in ([args.ratios[0]] if method == "unpruned" else args.ratios):
                yield method, (0.0 if method == "unpruned" else ratio), seed


def run_matrix(args) -> None:
    results = load_results(args.results)
    settings = {"epochs": args.epochs, "budget": args.budget}
    if results.get("settings", settings) != settings:
        sys.exit(f"{args.results} was made with {results['settings']}, not {settings}: "
                 f"use another --results file")
    results["settings"] = settings
    for method, ratio, seed in planned_cells(args):
        key = cell_key(method, ratio, seed)
        if key in results["cells"]:
            continue
        command = [sys.executable, os.path.abspath(__file__), "cell", "--method", method,
                   "--ratio", str(ratio), "--seed", str(seed), "--epochs", str(args.epochs),
                   "--budget", str(args.budget)]
        if args.visualdl:
            command += ["--log-dir", os.path.join(args.visualdl, key.replace("|", "_"))]
        started = time.time()
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{key}: FAILED ({proc.returncode})\n{proc.stderr[-2000:]}", flush=True)
            continue
        record = json.loads(proc.stdout.strip().splitlines()[-1])
        results["cells"][key] = record
        save_results(args.results, results)
        print(f"{key}: top-1 {record['top1']:.4f}, MACs -{record['macs_cut'] * 100:.1f}%, "
              f"events {record['events']}, {time.time() - started:.0f} s", flush=True)


# ------------------------------------------------------------------- the report
def stats(values):
    mean = statistics.mean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std, min(values), max(values)


def grouped(results: dict) -> dict:
    """(method, ratio) -> records; unpruned appears under every ratio."""
    cells = list(results["cells"].values())
    ratios = sorted({c["ratio"] for c in cells if c["method"] != "unpruned"})
    out = {}
    for c in cells:
        for ratio in (ratios if c["method"] == "unpruned" else [c["ratio"]]):
            out.setdefault((c["method"], ratio), []).append(c)
    return out


def table(results: dict) -> str:
    groups = grouped(results)
    ratios = sorted({r for _, r in groups})
    head = "| method | " + " | ".join(f"-{r * 100:.0f}% MACs: top-1 mean ± std (min-max), "
                                      f"MACs cut" for r in ratios) + " |"
    lines = [head, "|---" * (len(ratios) + 1) + "|"]
    for method in METHODS:
        cells = []
        for ratio in ratios:
            records = groups.get((method, ratio))
            if not records:
                cells.append("-")
                continue
            mean, std, low, high = stats([r["top1"] for r in records])
            cut = statistics.mean(r["macs_cut"] for r in records)
            cells.append(f"{mean * 100:.1f} ± {std * 100:.1f} ({low * 100:.1f}-{high * 100:.1f}), "
                         f"n={len(records)}, -{cut * 100:.1f}%")
        if any(c != "-" for c in cells):
            lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def event_drops(results: dict, method: str, ratio: float):
    """Eval right before minus right after each event, over all seeds."""
    drops = []
    for r in grouped(results).get((method, ratio), []):
        for e in r["events"]:
            drops.append(r["before_event"][str(e)] - r["curve"][e])
    return drops


def difference(a, b):
    """Mean of ``a`` minus mean of ``b`` and twice its standard error (Welch); a gap
    smaller than that is called noise."""
    se = np.sqrt((np.var(a, ddof=1) / len(a) if len(a) > 1 else 0.0)
                 + (np.var(b, ddof=1) / len(b) if len(b) > 1 else 0.0))
    return float(np.mean(a) - np.mean(b)), float(2 * se)


def noise_table(results: dict, against: str = "oneshot_start") -> str:
    """Each method's top-1 minus ``against``'s, per ratio, marked within noise or not."""
    groups = grouped(results)
    ratios = sorted({r for _, r in groups})
    lines = ["| method | " + " | ".join(f"-{r * 100:.0f}%: Δ vs {LABELS[against]} (points, "
                                         f"± 2 SE)" for r in ratios) + " |",
             "|---" * (len(ratios) + 1) + "|"]
    for method in METHODS:
        if method == against:
            continue
        cells = []
        for ratio in ratios:
            a = [r["top1"] for r in groups.get((method, ratio), [])]
            b = [r["top1"] for r in groups.get((against, ratio), [])]
            if len(a) < 2 or len(b) < 2:
                cells.append("-")
                continue
            delta, noise = difference(a, b)
            verdict = "within noise" if abs(delta) <= noise else ("better" if delta > 0 else "worse")
            cells.append(f"{delta * 100:+.1f} ± {noise * 100:.1f}: {verdict}")
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def targets(results: dict) -> str:
    """The three accuracy targets, measured."""
    groups, out = grouped(results), []

    def top1(method, ratio):
        return [r["top1"] for r in groups.get((method, ratio), [])]
    unpruned = top1("unpruned", 0.5)
    for method in ("agp_distill", "agp_distill_trained"):
        distill = top1(method, 0.5)
        if unpruned and distill:
            gap = (statistics.mean(unpruned) - statistics.mean(distill)) * 100
            out.append(f"-50%: {LABELS[method]} is {gap:.1f} points below unpruned "
                       f"(n={len(distill)}/{len(unpruned)}; target <= 1): "
                       f"{'met' if gap <= 1 else 'NOT met'}")
    in_fit = [m for m in METHODS if m not in ("unpruned", "oneshot_start")]
    means = {m: statistics.mean(top1(m, 0.75)) for m in in_fit if len(top1(m, 0.75)) > 1}
    oneshot = top1("oneshot_start", 0.75)
    if means and len(oneshot) > 1:
        best = max(means, key=means.get)
        spread = max(statistics.stdev(top1(best, 0.75)), statistics.stdev(oneshot))
        gain = (means[best] - statistics.mean(oneshot)) * 100
        out.append(f"-75%: best in-fit method {LABELS[best]} beats one-shot @0 + fine-tune by "
                   f"{gain:.1f} points; spread (larger std) {spread * 100:.1f}: "
                   f"{'met' if gain > spread * 100 else 'NOT met'}")
    for ratio in sorted({r for _, r in groups}):
        plain, recal = event_drops(results, "agp", ratio), event_drops(results, "agp_recal", ratio)
        if plain and recal:
            share = statistics.mean(recal) / statistics.mean(plain)
            out.append(f"-{ratio * 100:.0f}%: eval drop at AGP events with recalibration is "
                       f"{share:.2f} of without (target <= 0.5): "
                       f"{'met' if share <= 0.5 else 'NOT met'}")
    return "\n".join(out)


def drops_table(results: dict) -> str:
    ratios = sorted({r for _, r in grouped(results)})
    lines = ["| MACs target | AGP: mean eval drop at an event | AGP + BN recal | ratio |",
             "|---|---|---|---|"]
    for ratio in ratios:
        plain, recal = event_drops(results, "agp", ratio), event_drops(results, "agp_recal", ratio)
        if plain and recal:
            a, b = statistics.mean(plain), statistics.mean(recal)
            lines.append(f"| -{ratio * 100:.0f}% | {a:.3f} (n={len(plain)}) | {b:.3f} "
                         f"(n={len(recal)}) | {b / a if a else float('nan'):.2f} |")
    return "\n".join(lines)


def plot(results: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = grouped(results)
    ratios = sorted({r for _, r in groups})
    fig, axes = plt.subplots(1, len(ratios), figsize=(7 * len(ratios), 5), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        for method in METHODS:
            records = groups.get((method, ratio))
            if not records:
                continue
            curve = np.mean([r["curve"] for r in records], axis=0)
            ax.plot(range(len(curve)), curve, marker=".", label=LABELS[method])
        epochs = results.get("settings", {}).get("epochs")
        for event in ([] if epochs is None else range(2, agp_schedule(epochs)["end_epoch"] + 1, 2)):
            ax.axvline(event, color="grey", lw=0.5, ls="--")
        ax.set(title=f"-{ratio * 100:.0f}% MACs: eval top-1 after each epoch (mean of seeds; "
                     f"dashed: AGP events)",
               xlabel="epoch (0-based)", ylabel="top-1", ylim=(0, 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def write_visualdl(results: dict, log_dir: str) -> None:
    from visualdl import LogWriter
    for (method, ratio), records in grouped(results).items():
        curve = np.mean([r["curve"] for r in records], axis=0)
        with LogWriter(logdir=os.path.join(log_dir, f"{method}_{ratio:g}")) as writer:
            for epoch, value in enumerate(curve):
                writer.add_scalar(f"eval_top1_mean/{ratio:g}", float(value), epoch)


def report(args) -> None:
    results = load_results(args.results)
    print(f"settings: {results.get('settings')}, {len(results['cells'])} cells, "
          f"{sum(c['seconds'] for c in results['cells'].values()) / 60:.0f} min of fits")
    print(table(results))
    print()
    print(drops_table(results))
    print()
    print(noise_table(results))
    print()
    print(targets(results))
    if args.png:
        plot(results, args.png)
        print(f"wrote {args.png}")
    if args.visualdl:
        write_visualdl(results, args.visualdl)
        print(f"wrote VisualDL scalars to {args.visualdl}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("run", help="the matrix, one process per cell, resumable")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--ratios", nargs="+", type=float, default=[0.5, 0.75])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--budget", type=float, default=0.03)
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--visualdl", default=None, help="per-cell VisualDL logs under this dir")
    p = sub.add_parser("cell", help="one cell in this process; prints its JSON record")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--ratio", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--budget", type=float, default=0.03)
    p.add_argument("--log-dir", default=None)
    p = sub.add_parser("report", help="table, event drops, PNG, VisualDL")
    p.add_argument("--results", default=DEFAULT_RESULTS)
    p.add_argument("--png", default=None)
    p.add_argument("--visualdl", default=None)
    args = parser.parse_args()
    if args.what == "cell":
        record = run_cell(args.method, args.ratio, args.seed, args.epochs, args.budget,
                          args.log_dir)
        print(json.dumps(record))
    elif args.what == "run":
        run_matrix(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
