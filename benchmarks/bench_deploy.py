"""Batch-1 CPU latency of pruned MobileNetV1-224 and ResNet-50 where they are deployed.

    nice python benchmarks/bench_deploy.py [--models mobilenet_v1 resnet50]
        [--macs 0.3 0.5] [--rounding 1 8 16 auto] [--latency-target 0.5] [--latency-keep]
        [--runtimes pi_onednn_1 pi_onednn_1_keep pi_onednn_2 pi_native_1 pi_native_2 ort_1]
        [--rounds 10] [--runs-per-round 5] [--repeats 1] [--cache-dir DIR] [--json out.json]

For each model (random weights, 1000 classes, seed 0): the original, uniform L1Norm
pruning to each MACs target with each rounding (``auto``: the multiple
``slim_callbacks.latency.auto_round`` measures for Paddle Inference, 1 thread,
oneDNN), and the ``latency`` strategy at each latency target (rounding ``auto``;
``--latency-keep``: timed, and its target checked, with eager deletion off).
Every variant is exported verified (``slim_callbacks.export``, Paddle and, for
``ort_*``, ONNX) and timed in each runtime: ``pi_onednn_T`` / ``pi_native_T`` is Paddle
Inference with / without oneDNN at T threads (``measure_latency``), a ``_keep`` suffix
the same with eager deletion off (``keep_intermediates=True``: intermediate tensors are
kept, not freed after their last use; with it, every variant is also timed with and
without in the same interleaved rounds), ``ort_T`` ONNX Runtime at T threads. All
variants of a model are timed side by side in interleaved rounds (order rotated each
round), so load on a shared machine falls on all alike. ``round auto`` is measured at a
uniform -50% MACs cut (whole-network check; see ``auto_round``), for every MACs target.
The table gives the median ms (p25-p75), the speedup over the original and the speedup
as a share of the MACs ratio (the physical limit); for the latency strategy, the
reduction its model predicted beside the one measured in Paddle Inference, 1 thread.
"""
import argparse
import copy
import json
import os
import sys
import tempfile
import time

import numpy as np
import paddle

from slim_callbacks import count_flops, export, prune
from slim_callbacks.analysis.strategies import uniform_ratio
from slim_callbacks.latency.auto_round import auto_round_to
from slim_callbacks.latency.measure import _summary, measure_latency
from slim_callbacks.latency.strategy import latency_prediction, latency_ratios

SHAPE = [1, 3, 224, 224]
MODELS = {"mobilenet_v1": lambda: paddle.vision.models.mobilenet_v1(num_classes=1000),
          "resnet50": lambda: paddle.vision.models.resnet50(num_classes=1000)}
RUNTIMES = ("pi_onednn_1", "pi_onednn_1_keep", "pi_onednn_2", "pi_native_1", "pi_native_2",
            "ort_1")


def parse_runtime(name):
    """``pi_onednn_1`` -> ("pi", True, 1, False); ``pi_onednn_1_keep`` -> ("pi", True, 1,
    True); ``ort_1`` -> ("ort", None, 1, False)."""
    parts = name.split("_")
    keep = parts[-1] == "keep" and parts[0] == "pi"
    parts = parts[:-1] if keep else parts
    if parts[0] == "ort" and len(parts) == 2 and parts[1].isdigit():
        return "ort", None, int(parts[1]), False
    if parts[0] == "pi" and len(parts) == 3 and parts[1] in ("onednn", "native") and parts[2].isdigit():
        return "pi", parts[1] == "onednn", int(parts[2]), keep
    raise SystemExit(f"--runtimes: unknown {name!r} (pi_onednn_T, pi_native_T, either with "
                     f"_keep, or ort_T)")


def ort_latency(files, threads, rounds, runs_per_round, warmup=5):
    """ONNX Runtime batch-1 latency of each model, interleaved as measure_latency does."""
    import onnxruntime
    sessions, feeds = {}, {}
    rng = np.random.default_rng(0)
    for name, path in files.items():
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        sessions[name] = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feeds[name] = {sessions[name].get_inputs()[0].name: rng.standard_normal(SHAPE).astype("float32")}
    names = list(files)
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feeds[name])
    samples = {n: [] for n in names}
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            for _ in range(runs_per_round):
                start = time.perf_counter()
                sessions[name].run(None, feeds[name])
                samples[name].append((time.perf_counter() - start) * 1000)
    return [_summary(n, files[n], samples[n], threads, False) for n in names]


def variants(name, args):
    """``[(label, network, info)]``: the original and every pruned variant."""
    paddle.seed(0)
    original = MODELS[name]()
    original.eval()
    base = count_flops(original, SHAPE)
    out = [("original", original, {"macs": base})]
    auto = None
    if "auto" in args.rounding or args.latency_target:
        started = time.time()
        choice = auto_round_to(original, SHAPE, cache_dir=args.cache_dir)
        auto = choice.multiple
        timing = choice.network
        whole = "" if timing is None else "; whole network (" + timing.basis + "): " + ", ".join(
            f"round {m} {ms:.2f} ms (MACs -{timing.macs_reduction[m]:.1%})" for m, ms in timing.ms.items())
        print(f"{name}: round_to auto = {auto} (probe gains {choice.gains}, probes {choice.groups}"
              f"{whole}; {time.time() - started:.0f} s)", flush=True)
    for target in args.macs:
        for rounding in args.rounding:
            round_to = auto if rounding == "auto" else int(rounding)
            ratio = uniform_ratio(original, SHAPE, target, round_to=round_to)
            net = copy.deepcopy(original)
            prune(net, SHAPE, ratio, round_to=round_to)
            label = f"uniform -{target:.0%} MACs, round {rounding}" + (
                f" (={round_to})" if rounding == "auto" else "")
            out.append((label, net, {"macs": count_flops(net, SHAPE), "ratio": ratio,
                                     "round_to": round_to}))
    for target in args.latency_target:
        started = time.time()
        keep = {"keep_intermediates": args.latency_keep}
        ratios = latency_ratios(original, SHAPE, target, round_to=auto, cache_dir=args.cache_dir,
                                **keep)
        net = copy.deepcopy(original)
        plan = prune(net, SHAPE, ratios, round_to=auto)
        predicted = latency_prediction(original, SHAPE, plan,
                                       round_to=auto, cache_dir=args.cache_dir, **keep)
        print(f"{name}: latency strategy -{target:.0%}: {len(ratios)} groups, predicted "
              f"-{predicted['predicted_reduction']:.2%} ({time.time() - started:.0f} s)", flush=True)
        out.append((f"latency -{target:.0%} (round {auto}{', keep' if args.latency_keep else ''})", net,
                    {"macs": count_flops(net, SHAPE), "round_to": auto, "target": target,
                     "predicted_reduction": predicted["predicted_reduction"],
                     "keep_intermediates": args.latency_keep}))
    return out


def measure(name, args, folder):
    nets = variants(name, args)
    formats = ("paddle", "onnx") if any(r.startswith("ort") for r in args.runtimes) else ("paddle",)
    files = {}
    for i, (label, net, _) in enumerate(nets):
        result = export(net, os.path.join(folder, name, str(i)), SHAPE, formats)
        files[label] = (result.prefix, result.files.get("onnx", (None,))[0])
    rows = {label: dict(info) for label, _, info in nets}
    for repeat in range(args.repeats):
        for runtime in args.runtimes:
            kind, onednn, threads, keep = parse_runtime(runtime)
            started = time.time()
            if kind == "pi":
                results = measure_latency({k: v[0] for k, v in files.items()}, threads=threads,
                                          onednn=onednn, rounds=args.rounds,
                                          runs_per_round=args.runs_per_round,
                                          keep_intermediates=keep)
            else:
                results = ort_latency({k: v[1] for k, v in files.items()}, threads, args.rounds,
                                      args.runs_per_round)
            for r in results:
                rows[r.name].setdefault(f"{runtime} repeats", []).append(
                    {"median_ms": r.median_ms, "p25_ms": r.p25_ms, "p75_ms": r.p75_ms,
                     "samples": r.samples})
            print(f"{name}: {runtime} timed in {time.time() - started:.0f} s (repeat {repeat + 1})",
                  flush=True)
    if any(parse_runtime(rt)[3] for rt in args.runtimes):
        keep_side_by_side(name, files, rows, args)
    for row in rows.values():   # one repeat: its numbers; several: the median repeat
        for runtime in args.runtimes:
            repeats = sorted(row[f"{runtime} repeats"], key=lambda m: m["median_ms"])
            row[runtime] = dict(repeats[len(repeats) // 2])
    return rows


def keep_side_by_side(name, files, rows, args):
    """Every variant with eager deletion on and off, all timed in the same interleaved
    rounds (Paddle Inference, oneDNN, 1 thread): ``rows[label]["keep_delta"]``."""
    prefixes = {}
    for label, (prefix, _) in files.items():
        prefixes[label], prefixes[label + " keep"] = prefix, prefix
    for repeat in range(args.repeats):
        results = {r.name: r.median_ms for r in measure_latency(
            prefixes, threads=1, rounds=args.rounds, runs_per_round=args.runs_per_round,
            keep_intermediates=[n for n in prefixes if n.endswith(" keep")])}
        for label in files:
            rows[label].setdefault("keep_delta", []).append(
                {"free_ms": results[label], "keep_ms": results[label + " keep"]})
    print(f"{name}: eager deletion on vs off, side by side (pi_onednn_1; one pair per repeat): "
          + "; ".join(f"{label}: " + ", ".join(f"{d['free_ms']:.2f} -> {d['keep_ms']:.2f} ms"
                                               for d in rows[label]["keep_delta"])
                      for label in files), flush=True)


def table(name, rows, runtimes):
    base = rows["original"]
    head = "| variant | MACs | MACs ratio | " + " | ".join(
        f"{rt} ms (p25-p75) | speedup (of MACs ratio)" for rt in runtimes) + " |"
    lines = [f"**{name}**", "", head, "|" + "---|" * (3 + 2 * len(runtimes))]
    for label, row in rows.items():
        macs_ratio = base["macs"] / row["macs"]
        cells = [label, f"{row['macs'] / 1e6:.1f}M (-{1 - row['macs'] / base['macs']:.1%})",
                 f"{macs_ratio:.2f}x"]
        for rt in runtimes:
            m = row[rt]
            speedup = base[rt]["median_ms"] / m["median_ms"]
            cells += [f"{m['median_ms']:.2f} ({m['p25_ms']:.2f}-{m['p75_ms']:.2f})",
                      f"{speedup:.2f}x ({speedup / macs_ratio:.0%})"]
        lines.append("| " + " | ".join(cells) + " |")
    for label, row in rows.items():
        runtime = "pi_onednn_1_keep" if row.get("keep_intermediates") else "pi_onednn_1"
        if "predicted_reduction" in row and runtime in row:
            measured = [1 - m["median_ms"] / b["median_ms"] for m, b in
                        zip(row[f"{runtime} repeats"], base[f"{runtime} repeats"])]
            lines.append(f"\n{label}: target -{row['target']:.0%}, predicted "
                         f"-{row['predicted_reduction']:.2%}, measured "
                         + ", ".join(f"-{m:.2%}" for m in measured)
                         + f" ({runtime}; one per repeat)")
    if len(base[f"{runtimes[0]} repeats"]) > 1:
        lines.append("\nspeedup over the original per repeat (" + runtimes[0] + "): " + "; ".join(
            f"{label}: " + ", ".join(f"{b['median_ms'] / m['median_ms']:.2f}x" for m, b in
                                     zip(row[f"{runtimes[0]} repeats"], base[f"{runtimes[0]} repeats"]))
            for label, row in rows.items() if label != "original"))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--macs", nargs="*", type=float, default=[0.3, 0.5])
    parser.add_argument("--rounding", nargs="*", default=["1", "8", "16", "auto"])
    parser.add_argument("--latency-target", nargs="*", type=float, default=[0.5])
    parser.add_argument("--latency-keep", action="store_true",
                        help="the latency strategy times with eager deletion off (its target "
                             "is then checked in pi_onednn_1_keep)")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs-per-round", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1,
                        help="time every runtime this often; cells show the median repeat")
    parser.add_argument("--cache-dir", default=None, help="latency table directory")
    parser.add_argument("--json", default=None, help="write the numbers here")
    args = parser.parse_args()
    for runtime in args.runtimes:
        parse_runtime(runtime)
    if args.latency_keep and args.latency_target and "pi_onednn_1_keep" not in args.runtimes:
        raise SystemExit("--latency-keep: add pi_onednn_1_keep to --runtimes (where its target "
                         "is measured)")
    print(f"bench_deploy {' '.join(sys.argv[1:])}", flush=True)
    out = {}
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as folder:
        for name in args.models:
            out[name] = measure(name, args, folder)
            print(table(name, out[name], args.runtimes), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
