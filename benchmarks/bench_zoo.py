"""How much of the PaddleClas model zoo can slim_callbacks prune?

    pip install paddleclas --no-deps     # the bench installs nothing itself
    nice python benchmarks/bench_zoo.py [--families ResNet ViT ...] [--models NAME ...]
        [--limit N] [--ratio 0.3] [--timeout 300] [--fold-bn-shift]
        [--structure attention=heads grouped_conv=channels] [--out output/bench_zoo]
    nice python benchmarks/bench_zoo.py --toolkits   # PP-YOLOE-s, small ERNIE and BERT
    nice python benchmarks/bench_zoo.py --from-export   # each family through its export

One backbone per family of ``ppcls.arch.backbone`` (the smallest-looking name: no
large/base/huge/giant in it, then the smallest leading number; ``--models`` picks
others), each in its own process with a timeout, batch 1 at the input size in its name
(224 if none). Per model:

- **MACs cut** by ``prune(net, shape, ratio)`` (uniform ratio, L1 norm) and the prune
  time (trace + plan + surgery);
- **exact**: the channels the prune removes are zeroed first (producer rows, biases,
  BatchNorm scale and shift, after three train-mode forwards give the BatchNorm
  statistics an order-one scale), so the eval outputs before and after pruning must agree:
  the largest absolute difference is reported (exact if <= 1e-4 of the output scale).
  Removing channels a LayerNorm/GroupNorm normalizes is approximate by design, so
  where such groups exist exactness is checked on a copy pruned without them (the
  table says how many), and the full prune's difference is kept as ``approx_diff``;
  ``ln_diff`` / ``ln_exact`` compare the full prune with the unpruned network whose
  ``nn.LayerNorm``/``nn.GroupNorm`` layers take their statistics over the kept channels
  only (meaningful where every approximation is such a layer, as in ViT, DeiT, Swin);
- **trains**: one Momentum step in train mode on the pruned network, loss finite;
- **blocked by**: the op with the most MACs at stake in blocked groups
  (:func:`slim_callbacks.explain`), and its share of the network's MACs.

``--structure field=choice [field=choice]`` traces and prunes with that
:class:`~slim_callbacks.tracing.structure.Structure` (``attention=heads``,
``grouped_conv=channels``, ``grouped_conv=groups``); rows then count the groups that
follow a grouped-conv choice (``grouped_structured``) and the grouped convs that fell
back to positions (``grouped_fallbacks``). ``--toolkits`` measures full models of
PaddleDetection and PaddleNLP instead (:mod:`zoo_toolkits`: needs paddledet and
paddlenlp; rows add whether the pruned model's export is verified). Writes ``zoo.json`` and ``zoo.md`` to
``--out``. Not part of the test suite: it needs paddleclas and takes long on two cores
(minutes per large model).
"""
import argparse
import copy
import importlib.util
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
PENALTY_WORDS = ("giant", "huge", "large", "base", "xlarge", "wsl", "distilled", "ssld", "384",
                 "448", "512")
SIZE_RANKS = {"base": 1, "large": 2, "xlarge": 3, "huge": 3, "giant": 4}  # MAE base before huge


# ------------------------------------------------------------------ pure helpers
def family_of(name: str) -> str:
    """``ResNet50_vd`` -> ``ResNet``, ``MobileNetV3_large_x1_0`` -> ``MobileNetV3``,
    ``Res2Net50_26w_4s`` -> ``Res2Net``, ``SE_ResNeXt50_32x4d`` -> ``SE_ResNeXt``."""
    prefix = ""
    if name.startswith("SE_"):
        prefix, name = "SE_", name[3:]
    match = re.match(r"[A-Za-z]+(?:\d+[A-Za-z]+)*", name)
    family = match.group(0) if match else name
    version = re.match(r"\d+", name[len(family):]) if family.endswith("V") else None
    return prefix + family + (version.group(0) if version else "")


def smallness(name: str) -> tuple:
    """Sort key: names that look small first (see the module docstring)."""
    lower = name.lower()
    penalty = sum(SIZE_RANKS.get(word, 1) for word in PENALTY_WORDS if word in lower)
    rest = name[len(family_of(name)):]
    number = re.search(r"\d+", rest)
    return penalty, int(number.group(0)) if number else 0, len(name), name


def pick_models(names, families=None, limit=None):
    """One name per family (the smallest-looking), families in alphabetical order."""
    by_family = {}
    for name in names:
        by_family.setdefault(family_of(name), []).append(name)
    chosen = [min(members, key=smallness) for family, members in sorted(by_family.items())
              if families is None or family in families]
    return chosen[:limit] if limit else chosen


NATIVE_SIZES = {"AdaFace": 112, "MobileFaceNet": 112,  # face models: 112x112 crops
                "MobileViTV2": 256,  # its attention reshapes need 256
                "WideResNet": 32}  # a CIFAR network (FixMatch's WRN-28-2)
# constructors that take no defaults: the arguments of the usual configuration
REQUIRED_ARGUMENTS = {"WideResNet": {"depth": 28, "widen_factor": 2, "dropout": 0.0,
                                     "num_classes": 10}}


def _se_hrnet_w64():
    """SE_HRNet_W64_C as its constructor builds it: the constructor itself first looks up
    a weights URL that PaddleClas 2.6 does not have (KeyError, even without weights)."""
    from ppcls.arch.backbone.legendary_models import hrnet
    return hrnet.HRNet(width=64, stages_pattern=hrnet.MODEL_STAGES_PATTERN["HRNet"], has_se=True)


# constructors that fail before building anything: the same network, built directly
BUILT_DIRECTLY = {"SE_HRNet_W64_C": _se_hrnet_w64}

# family -> (layer type, factor): random weights whose activations overflow to inf are
# scaled down in the convs inside that layer type (RedNet's involutions multiply the
# input by kernels generated from it: 1e34 by the first stage at PaddleClas' init)
TAMED_LAYERS = {"RedNet": ("Involution", 0.3)}


def tame_random_weights(net, family: str) -> None:
    """Scales the conv weights inside the layer type :data:`TAMED_LAYERS` names."""
    import paddle
    if family not in TAMED_LAYERS:
        return
    layer_type, factor = TAMED_LAYERS[family]
    for layer in net.sublayers():
        if type(layer).__name__ == layer_type:
            for conv in layer.sublayers():
                if isinstance(conv, paddle.nn.Conv2D):
                    conv.weight.set_value(conv.weight * factor)


def input_size_of(name: str) -> int:
    """The input size written in a model's name (``..._384`` -> 384), else the
    family's native size, else 224."""
    if family_of(name) in NATIVE_SIZES:
        return NATIVE_SIZES[family_of(name)]
    sizes = [int(s) for s in re.findall(r"(?<!\d)(224|256|288|320|384|448|512)(?!\d)", name)]
    return sizes[-1] if sizes else 224


def summary(rows) -> dict:
    """Counts and the median MACs cut over the models that pruned."""
    pruned = [r for r in rows if r.get("status") == "ok"]
    cuts = [r["macs_cut"] for r in pruned]
    return {"models": len(rows), "pruned": len(pruned),
            "exact": sum(r["exact"] is True for r in pruned),
            "not_comparable": sum(r["exact"] is None for r in pruned),
            "trains": sum(bool(r["trains"]) for r in pruned),
            "median_macs_cut": statistics.median(cuts) if cuts else None,
            "failed": [(r["model"], r.get("error", r.get("status"))) for r in rows
                       if r.get("status") != "ok"]}


def format_table(rows) -> str:
    """A markdown table of the rows, one per model."""
    exports = any("export" in r for r in rows)  # the toolkit models' rows
    lines = ["| family | model | input | GMACs | MACs cut | exact (max diff) | trains | "
             "prune s | most MACs blocked by |" + (" export |" if exports else ""),
             "|---|---|---|---|---|---|---|---|---|" + ("---|" if exports else "")]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['family']} | {r['model']} | {r.get('input', '')} | | "
                         f"{r.get('status')} | | | | {r.get('error', '')[:80]} |")
            continue
        blocker = (f"{r['top_blocker']} ({r['top_blocker_share']:.0%})"
                   if r.get("top_blocker") else "-")
        lines.append(f"| {r['family']} | {r['model']} | {r['input']} | {r['macs'] / 1e9:.2f} | "
                     f"{r['macs_cut']:.1%} | {_exact_cell(r)} | {'yes' if r['trains'] else 'NO'} | "
                     f"{r['prune_s']:.1f} | {blocker} |" + (f" {r.get('export', '')} |" if exports else ""))
    return "\n".join(lines)


def _exact_cell(row) -> str:
    if row.get("approximate_groups"):
        return (f"{'yes' if row['exact'] else 'NO'} ({row['max_diff']:.1e}) without "
                f"{row['approximate_groups']} LayerNorm groups")
    if row["exact"] is None:
        return "n/a (unpruned output not finite)"
    return f"{'yes' if row['exact'] else 'NO'} ({row['max_diff']:.1e})"


# ------------------------------------------------------------------ paddleclas
def import_backbones():
    """``ppcls.arch.backbone``, importing ``ppcls`` from the paddleclas wheel directly
    (``import paddleclas`` itself needs OpenCV)."""
    if importlib.util.find_spec("ppcls") is None:
        spec = importlib.util.find_spec("paddleclas")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("paddleclas is not installed: pip install paddleclas --no-deps")
        sys.path.insert(0, list(spec.submodule_search_locations)[0])
    import ppcls.arch.backbone as backbones
    from ppcls.utils import logger
    logger.init_logger()  # legendary models log through it and fail if it is not set up
    return backbones


def backbone_names(backbones):
    import inspect
    return sorted(n for n, f in vars(backbones).items()
                  if inspect.isfunction(f) and n[:1].isupper() and not n.startswith("_"))


# ------------------------------------------------------------------ one model
def parse_structure(items) -> dict:
    """``["attention=heads"]`` -> ``{"attention": "heads"}`` (checked by prune).

    >>> parse_structure(["attention=heads"]), parse_structure(None)
    ({'attention': 'heads'}, {})
    """
    pairs = [item.split("=", 1) for item in items or []]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit(f"--structure takes field=choice pairs, e.g. attention=heads: {items}")
    return dict(pairs)


def measure_one(name: str, ratio: float, fold_bn_shift: bool = False, structure=None) -> dict:
    """Builds, explains, kills, prunes, compares and trains one backbone (in this process)."""
    import numpy as np
    import paddle

    sys.path.insert(0, os.path.join(HERE, "..", "tests"))
    import zoo_toolkits
    if name in zoo_toolkits.MODELS:
        return zoo_toolkits.measure(name, ratio, structure)
    from helpers import (  # the tests' dead-channel idea
        calibrate,
        kept_channels,
        kill_units,
        layer_norms_over,
        outputs,
    )

    from slim_callbacks import count_flops, explain, prune, trace

    backbones = import_backbones()
    size = input_size_of(name)
    shape = [1, 3, size, size]
    row = {"model": name, "family": family_of(name), "input": size}
    paddle.seed(0)
    net = BUILT_DIRECTLY[name]() if name in BUILT_DIRECTLY else build(
        getattr(backbones, name), REQUIRED_ARGUMENTS.get(name, {}))
    tame_random_weights(net, row["family"])
    row["macs"] = count_flops(net, shape)
    report = explain(net, shape)
    top = report.by_op()[:1]
    row["top_blocker"], row["top_blocker_share"] = (top[0][0], top[0][2] / report.total_macs) if top else ("", 0.0)
    calibrate(net, shape)
    graph = trace(net, shape, structure)
    dead = kill_units(net, graph, ratio=ratio)
    exact_groups = [g.name for g in graph.prunable_groups() if not g.approximate]
    # groups whose units follow grouped_conv=channels (segments) or =groups (_groups sizes)
    row["grouped_structured"] = sum(g.segments is not None or any(s.attr == "_groups" for s in g.sizes)
                                    for g in graph.prunable_groups())
    row["grouped_fallbacks"] = len(graph.fallbacks)  # grouped convs pruned by positions instead
    row["approximate_groups"] = len(graph.prunable_groups()) - len(exact_groups)
    x = paddle.randn([1] + shape[1:])
    before = outputs(net, x)
    exact_net = copy.deepcopy(net) if row["approximate_groups"] else None
    if exact_net is not None:  # what the full prune must give: LayerNorms over the kept channels
        with layer_norms_over(net, kept_channels(net, graph, dead)):
            reference = outputs(net, x)
    start = time.perf_counter()
    plan = prune(net, shape, ratio, fold_bn_shift=fold_bn_shift, structure=structure)
    row["prune_s"] = time.perf_counter() - start
    row["sizes"] = sized_attributes(plan)
    row["macs_cut"] = 1 - count_flops(net, shape) / row["macs"]
    if exact_net is not None:  # exactness is checked on the groups whose removal is exact
        row["approx_diff"] = float(np.abs(outputs(net, x) - before).max())
        row["ln_diff"] = float(np.abs(outputs(net, x) - reference).max())
        row["ln_exact"] = row["ln_diff"] <= 1e-4 * max(1.0, float(np.abs(reference).max()))
        prune(exact_net, shape, {name: ratio for name in exact_groups}, fold_bn_shift=fold_bn_shift,
              structure=structure)
    after = outputs(exact_net or net, x)
    if np.isfinite(before).all():
        row["max_diff"] = float(np.abs(after - before).max())
        row["exact"] = row["max_diff"] <= 1e-4 * max(1.0, float(np.abs(before).max()))
    else:  # nothing to compare: the unpruned network's outputs are already NaN/Inf
        row["max_diff"], row["exact"] = float("nan"), None
    net.train()
    optimizer = paddle.optimizer.Momentum(0.01, parameters=net.parameters())
    out = net(paddle.randn([2] + shape[1:]))
    loss = (out[0] if isinstance(out, (list, tuple)) else out).mean()
    loss.backward()
    optimizer.step()
    row["trains"] = bool(math.isfinite(float(loss)))
    row["status"] = "ok"
    return row


def sized_attributes(plan) -> dict:
    """``{"num_heads": "3 -> 2: 12 layers"}``: how the int attributes the plan sets
    changed, counted over layers.

    >>> from slim_callbacks.engine.plan import PruningPlan
    >>> sized_attributes(PruningPlan(attrs={("a", "num_heads"): (3, 2), ("b", "num_heads"): (3, 2)}))
    {'num_heads': '3 -> 2: 2 layers'}
    """
    counts = {}
    for (_, attr), (before, after) in sorted(plan.attrs.items()):
        key = (attr, f"{before} -> {after}")
        counts[key] = counts.get(key, 0) + 1
    out = {}
    for (attr, change), n in counts.items():
        out[attr] = ", ".join(filter(None, [out.get(attr), f"{change}: {n} layers"]))
    return out


def build(constructor, arguments=None):
    """The backbone with random weights: ``pretrained=False`` where it takes the
    argument (a few default to downloading weights); a constructor that needs
    ``arguments`` (:data:`REQUIRED_ARGUMENTS`) gets those alone."""
    import inspect
    if arguments:
        return constructor(**arguments)
    parameters = inspect.signature(constructor).parameters
    takes = "pretrained" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    return constructor(pretrained=False) if takes else constructor()


def run_isolated(name: str, ratio: float, timeout: float, fold_bn_shift: bool = False,
                 structure=()) -> dict:
    """:func:`measure_one` in a child process, so a crash or a hang costs one row."""
    cmd = [sys.executable, os.path.abspath(__file__), "--one", name, "--ratio", str(ratio)]
    cmd += ["--fold-bn-shift"] if fold_bn_shift else []
    cmd += ["--structure", *structure] if structure else []
    base = {"model": name, "family": family_of(name), "input": input_size_of(name)}
    return child_row(cmd, base, timeout)


def child_row(cmd, base: dict, timeout: float) -> dict:
    """The last JSON line a child process prints, or ``base`` with its timeout or error."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "error": f"over {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    errors = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    return {**base, "status": "error", "error": errors[-1] if errors else f"exit {done.returncode}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="*", help="only these families (see family_of)")
    parser.add_argument("--models", nargs="*", help="these backbones instead of one per family")
    parser.add_argument("--limit", type=int, help="at most N models")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--timeout", type=float, default=300, help="seconds per model")
    parser.add_argument("--out", default=os.path.join("output", "bench_zoo"))
    parser.add_argument("--fold-bn-shift", action="store_true",
                        help="prune with fold_bn_shift=True (zeroed channels behind a sigmoid "
                             "still send sigmoid(0) = 0.5: folding makes them exact)")
    parser.add_argument("--structure", nargs="*", default=[],
                        help="what a unit spans, as field=choice, e.g. attention=heads, "
                             "grouped_conv=channels or grouped_conv=groups")
    parser.add_argument("--toolkits", action="store_true",
                        help="the full PaddleDetection and PaddleNLP models instead (zoo_toolkits)")
    parser.add_argument("--from-export", action="store_true",
                        help="each backbone through its export instead: bench_from_export.py "
                             "--paddleclas (rebuilt exact, same widths, export, fidelity)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.from_export:  # the same families, treated as program-only
        cmd = [sys.executable, os.path.join(HERE, "bench_from_export.py"), "--paddleclas",
               "--ratio", str(args.ratio), "--timeout", str(args.timeout), "--out", args.out]
        cmd += ["--families", *args.families] if args.families else []
        cmd += ["--models", *args.models] if args.models else []
        raise SystemExit(subprocess.call(cmd))
    structure = parse_structure(args.structure)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    if args.one:
        print(json.dumps(measure_one(args.one, args.ratio, args.fold_bn_shift,
                                     parse_structure(args.structure))))
        return
    import zoo_toolkits
    names = (list(zoo_toolkits.MODELS) if args.toolkits else args.models
             or pick_models(backbone_names(import_backbones()), args.families, args.limit))
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for name in names:
        start = time.perf_counter()
        rows.append(run_isolated(name, args.ratio, args.timeout, args.fold_bn_shift, args.structure))
        r = rows[-1]
        print(f"{name}: {r.get('status')} cut={r.get('macs_cut', float('nan')):.3f} "
              f"exact={r.get('exact')} trains={r.get('trains')} "
              f"({time.perf_counter() - start:.0f} s) {r.get('error', '')}", flush=True)
        with open(os.path.join(args.out, "zoo.json"), "w") as f:
            json.dump({"ratio": args.ratio, "structure": structure, "rows": rows,
                       "summary": summary(rows)}, f, indent=1)
    with open(os.path.join(args.out, "zoo.md"), "w") as f:
        f.write(format_table(rows) + "\n")
    print(format_table(rows))
    print(json.dumps(summary(rows), indent=1))


if __name__ == "__main__":
    main()
