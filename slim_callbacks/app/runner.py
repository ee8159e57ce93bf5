"""Turn a :class:`~slim_callbacks.app.recipe.Recipe` into a network, an optimizer, callbacks
and a ``paddle.Model.fit`` run; also the recipe's final pruning without training.

The command line (:mod:`slim_callbacks.app.cli`) is a thin layer over this module:

- :func:`run` builds everything, evaluates, fits with :class:`PruneCallback` (and
  BN-L1 sparsity, VisualDL logs, checkpoints), evaluates again and writes
  ``summary.json`` (``{"before": {...}, "after": {...}}``) in the run's output directory.
- :func:`dry_run_recipe` shrinks any recipe to 2 epochs x 2 steps of batch 2 on
  synthetic data of its input shape, with its final pruning one-shot at epoch 0.
- :func:`plan` applies the recipe's final pruning to a freshly built network.
- :func:`run_sensitivity` writes the sensitivities file that ``strategy: sensitive``
  recipes read.

Relative paths: ``pruning.sensitivities`` is relative to the directory of the recipe
file (so ``recipes/mobilenetv1/sensitive_*.yaml`` share
``recipes/mobilenetv1/sensitivities/mobilenetv1_l1norm.json`` wherever you run from);
``data.root``, ``data.path``, ``model.pretrained`` and the output directories are
relative to the current directory, as in PaddleClas.

Example:
    >>> job = load_job({"name": "tiny", "model": {"name": "mobilenet_v1",
    ...                 "kwargs": {"scale": 0.25}}, "data": {"source": "synthetic"},
    ...                 "pruning": {"target_flops_reduction": 0.5,
    ...                             "layers": ["conv*._pointwise_conv*"]}})
    >>> result = plan(job)
    >>> round(result["flops_reduction"], 2)
    0.5
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib
import inspect
import json
import logging
import os
import re
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import paddle

from slim_callbacks.analysis.flops import layer_widths, profile
from slim_callbacks.app.recipe import Recipe, load_recipe
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.core.paddle_utils import is_rank0

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("acc", "macs", "gflops", "params", "size_mb")
PLAN_KEYS = ("macs", "gflops", "gflops_legacy", "params", "size_mb")
DRY_EPOCHS, DRY_STEPS, DRY_BATCH = 2, 2, 2
SENSITIVITY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


@dataclasses.dataclass(frozen=True)
class Job:
    """A validated recipe plus the directory its relative ``sensitivities`` path
    is resolved against, and notes to show the user (e.g. what a dry run changed)."""

    recipe: Recipe
    base_dir: str = "."
    source: Optional[str] = None
    notes: tuple = ()
    dry_run: bool = False

    def sensitivities_path(self) -> Optional[str]:
        """``pruning.sensitivities`` resolved against the recipe file's directory."""
        pruning = self.recipe.pruning
        if pruning is None or pruning.sensitivities is None:
            return None
        return os.path.normpath(os.path.join(self.base_dir, pruning.sensitivities))


def load_job(path_or_dict, overrides: Sequence[str] = ()) -> Job:
    """Load and validate a recipe (file or mapping) with ``-o`` style overrides; an
    ``npz`` recipe without ``num_classes`` takes it from its labels (a note says so)."""
    recipe = load_recipe(path_or_dict, overrides)
    recipe, notes = infer_num_classes(recipe)
    if isinstance(path_or_dict, (str, os.PathLike)):
        path = os.fspath(path_or_dict)
        return Job(recipe, os.path.dirname(os.path.abspath(path)), path, notes)
    return Job(recipe, os.getcwd(), notes=notes)


def infer_num_classes(recipe: Recipe):
    """``(recipe, notes)``: for ``data.source: npz`` with no ``data.num_classes`` (nor
    ``model.kwargs.num_classes``), the class count is the largest label + 1, so the
    model's head fits the data instead of the model's default (1000)."""
    from slim_callbacks.app.data import npz_num_classes
    data = recipe.data
    if data.source != "npz" or data.num_classes is not None or not os.path.isfile(data.path):
        return recipe, ()
    classes, largest = npz_num_classes(data.path)
    raw = recipe.to_dict()
    raw["data"]["num_classes"] = classes
    note = f"data: {classes} classes inferred from labels 0..{largest} of {data.path}"
    return load_recipe(raw), (note,)


# ----------------------------------------------------------------------- building
#: Model name -> factory returning a ``paddle.nn.Layer``; ``model.name`` may name any of
#: these (or ``module:callable`` for one of them, or a ``paddle.nn.Layer`` subclass).
MODELS: Dict[str, Callable[..., paddle.nn.Layer]] = {
    name: getattr(paddle.vision.models, name) for name in paddle.vision.models.__all__}
MODEL_ALLOWED = ("a paddle.nn.Layer subclass, a paddle.vision.models function or a "
                 "function registered with slim_callbacks.register_model")


def register_model(name: str, factory: Callable[..., paddle.nn.Layer]) -> None:
    """Makes ``factory`` a model that recipes may name: ``model.name: <name>``, or
    ``model.name: module:function`` for the function itself.

    Example:
        >>> register_model("tiny", lambda num_classes=10: paddle.nn.Linear(4, num_classes))
        >>> list(model_factory("tiny")(num_classes=3).weight.shape)
        [4, 3]
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigError("name", name, "a Python identifier, e.g. my_net")
    if not callable(factory):
        raise ConfigError("factory", factory, "a callable returning a paddle.nn.Layer")
    MODELS[name] = factory


def _is_allowed_model(obj) -> bool:
    if isinstance(obj, type):
        return issubclass(obj, paddle.nn.Layer)
    return any(obj is factory for factory in MODELS.values())


def model_factory(name: str) -> Callable:
    """The callable named by ``model.name``: a registered model (every
    ``paddle.vision.models`` function is) or ``module:callable``.

    ``module:callable`` imports the module, which runs its code; the attribute is then
    accepted only if it is a ``paddle.nn.Layer`` subclass or a registered factory, so a
    recipe cannot call anything else (``os:system`` is refused, uncalled).
    """
    if ":" not in name:
        if name in MODELS:
            return MODELS[name]
        raise ConfigError("model.name", name, f"a registered model, e.g. "
                          f"{', '.join(sorted(MODELS, key=lambda n: (n[0].isupper(), n))[:8])}..., "
                          f"or 'module:callable' for "
                          f"{MODEL_ALLOWED}")
    module_name, attr = name.split(":", 1)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError("model.name", name, f"an importable module ({err})") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError("model.name", name, f"a name that module {module_name} defines")
    if not _is_allowed_model(obj):
        raise ConfigError("model.name", name, MODEL_ALLOWED)
    return obj


def model_kwargs(recipe: Recipe, factory: Callable) -> Dict[str, Any]:
    """``model.kwargs`` checked against the factory's signature (plus ``num_classes``
    from the data when the factory takes it); each bad key is a ConfigError naming
    ``model.kwargs.<key>``."""
    kwargs = dict(recipe.model.kwargs)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = not params or any(p.kind == p.VAR_KEYWORD for p in params.values())
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key, value in kwargs.items():
        if not takes_any and key not in named:
            raise ConfigError(f"model.kwargs.{key}", value,
                              f"an argument of {recipe.model.name}: {', '.join(named) or 'none'}")
        default = params[key].default if key in params else None
        if not _same_kind(value, default):
            raise ConfigError(f"model.kwargs.{key}", value,
                              f"a {type(default).__name__} like its default {default!r}")
    if "num_classes" not in kwargs and recipe.data.num_classes is not None and \
            (takes_any or "num_classes" in named):
        kwargs["num_classes"] = recipe.data.num_classes
    return kwargs


def _same_kind(value, default) -> bool:
    """True unless ``default`` is a bool, number or string and ``value`` is not one."""
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    return True


def build_network(recipe: Recipe) -> paddle.nn.Layer:
    """The network of ``model``; ``num_classes`` comes from the data unless given."""
    factory = model_factory(recipe.model.name)
    kwargs = model_kwargs(recipe, factory)
    try:
        network = factory(**kwargs)
    except (TypeError, ValueError, AssertionError) as err:
        unexpected = re.search(r"unexpected keyword argument '(\w+)'", str(err))
        if unexpected and unexpected.group(1) in kwargs:
            key = unexpected.group(1)
            raise ConfigError(f"model.kwargs.{key}", kwargs[key],
                              f"an argument that {recipe.model.name} accepts ({err})") from None
        raise ConfigError("model.kwargs", recipe.model.kwargs,
                          f"arguments that {recipe.model.name} accepts ({err})") from None
    if not isinstance(network, paddle.nn.Layer):
        raise ConfigError("model.name", recipe.model.name, "a callable returning a paddle.nn.Layer")
    return network


def load_pretrained(network: paddle.nn.Layer, path: str) -> None:
    """Loads a ``.safetensors`` or ``.pdparams`` state dict; every key must fit the network."""
    from slim_callbacks.core.weights import load_state
    if not os.path.isfile(path):
        raise SlimError(f"model.pretrained: {path} not found (download the weights, or "
                        f"-o model.pretrained=null to train from scratch)")
    state = load_state(path, "model.pretrained")
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or wrong:
        raise SlimError(f"model.pretrained: {path} does not fit {type(network).__name__}: "
                        f"{len(missing)} missing keys {missing[:3]}, {len(wrong)} shape "
                        f"mismatches {wrong[:3]}")
    network.set_state_dict(state)
    logger.info("loaded pretrained weights from %s", path)


def build_lr(recipe: Recipe):
    """A float or a per-epoch ``paddle.optimizer.lr`` scheduler."""
    lr = recipe.train.lr
    if lr.schedule == "constant":
        return lr.base
    if lr.schedule == "piecewise":
        values = [lr.base * lr.gamma ** i for i in range(len(lr.milestones) + 1)]
        return paddle.optimizer.lr.PiecewiseDecay(boundaries=list(lr.milestones), values=values)
    return paddle.optimizer.lr.CosineAnnealingDecay(lr.base, T_max=recipe.train.epochs)


def build_optimizer(recipe: Recipe, network: paddle.nn.Layer):
    """momentum / sgd / adam (weight_decay as L2Decay) or adamw (decoupled decay)."""
    opt = recipe.train.optimizer
    lr = build_lr(recipe)
    params = network.parameters()
    decay = paddle.regularizer.L2Decay(opt.weight_decay) if opt.weight_decay else None
    if opt.name == "momentum":
        return paddle.optimizer.Momentum(lr, momentum=opt.momentum, parameters=params,
                                         weight_decay=decay)
    if opt.name == "sgd":
        return paddle.optimizer.SGD(lr, parameters=params, weight_decay=decay)
    if opt.name == "adam":
        return paddle.optimizer.Adam(lr, parameters=params, weight_decay=decay)
    return paddle.optimizer.AdamW(lr, parameters=params, weight_decay=opt.weight_decay)


def stand_in_bn_scales(network: paddle.nn.Layer, seed: int = 0) -> int:
    """Draws every BatchNorm scale uniformly in [0.1, 1): a stand-in for trained weights
    when a BN-scale criterion (``opt_slim``) must plan on a freshly initialized network,
    whose scales are all 1 and so tie. Returns how many layers changed."""
    from slim_callbacks.callbacks.bn_l1 import bn_scales
    rng = np.random.default_rng(seed)
    scales = bn_scales(network)
    for weight in scales:
        weight.set_value(rng.uniform(0.1, 1.0, weight.shape).astype("float32"))
    return len(scales)


def needs_trained_scales(recipe: Recipe) -> bool:
    """``opt_slim`` cannot plan on initial weights: every BN scale is 1."""
    return recipe.pruning is not None and recipe.pruning.criterion == "opt_slim"


def missing_sensitivities_message(job: Job) -> str:
    where = job.source or "RECIPE"
    return (f"pruning.sensitivities: {job.sensitivities_path()} not found; make it with "
            f"`slim-callbacks sensitivity {where}` (paths are relative to the recipe file)")


def check_sensitivities_file(job: Job) -> None:
    """SlimError (saying how to make it) if a sensitive recipe's file is missing."""
    pruning = job.recipe.pruning
    if pruning is not None and pruning.strategy == "sensitive" \
            and not os.path.isfile(job.sensitivities_path()):
        raise SlimError(missing_sensitivities_message(job))


def final_ratios(job: Job, network: paddle.nn.Layer):
    """The ratios the recipe ends with (float or ``{pattern/group: ratio}``), decided by
    the strategies registry (:func:`~slim_callbacks.analysis.strategies.resolve_strategy`, as
    :class:`PruneCallback` does) on ``network`` without changing it; ``None`` when the
    recipe does not prune. Errors name the recipe key (``pruning.strategy_options.max_ratio``)."""
    from slim_callbacks.analysis.strategies import RECIPE_KEYS, resolve_strategy, strategy_options
    recipe, pruning = job.recipe, job.recipe.pruning
    if pruning is None:
        return None
    check_sensitivities_file(job)
    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    options = strategy_options(
        pruning.strategy, ratios=pruning.ratios,
        target_flops_reduction=pruning.target_flops_reduction, layers=layers,
        skip=pruning.skip, criterion=pruning.criterion, round_to=pruning.round_to,
        sensitivities=job.sensitivities_path(), options=pruning.strategy_options)
    try:
        return resolve_strategy(pruning.strategy, network, list(recipe.input_shape), **options)
    except ConfigError as err:
        name = str(err.key).split()[0].split("[")[0]
        key = RECIPE_KEYS.get(name) or (f"pruning.strategy_options.{name}"
                                        if name in pruning.strategy_options else None)
        if key is None:
            raise
        raise ConfigError(key, err.value, err.allowed) from None


def check_schedule(recipe: Recipe, ratios) -> None:
    """``pruning.schedule`` checked against ``train.epochs`` and the final ratios before
    any work, with errors naming the recipe key (``pruning.schedule.initial_ratio``)."""
    from slim_callbacks.callbacks.schedule_factory import schedule_from_dict
    pruning = recipe.pruning
    if pruning is None or pruning.schedule is None:
        return
    schedule = schedule_from_dict(pruning.schedule, key="pruning.schedule")
    try:
        schedule.validate(recipe.train.epochs)
    except ConfigError as err:
        key = err.key if str(err.key).startswith("pruning.") else f"pruning.schedule.{err.key}"
        raise ConfigError(key, err.value, err.allowed) from None
    initial = getattr(schedule, "initial_ratio", 0.0)
    finals = list(ratios.values()) if isinstance(ratios, dict) else [ratios]
    if schedule.final_ratio is None and ratios is not None and initial > min(finals):
        raise ConfigError("pruning.schedule.initial_ratio", initial,
                          f"at most {min(finals):g}, the smallest final ratio this recipe "
                          f"prunes to (targets never decrease)")


def build_callbacks(job: Job, ratios, verbose: int = 1,
                    resume_from: Optional[str] = None) -> List[paddle.callbacks.Callback]:
    """LR stepping per epoch, pruning (with BN-L1, VisualDL and the NaN/Inf guard;
    resuming from ``resume_from``), or VisualDL and the guard alone; the schedule is
    checked against the final ``ratios`` first."""
    from slim_callbacks.callbacks import FiniteLossGuard, PruneCallback, VisualDLLogger
    recipe = job.recipe
    check_schedule(recipe, ratios)
    callbacks: List[paddle.callbacks.Callback] = [
        paddle.callbacks.LRScheduler(by_step=False, by_epoch=True)]
    log_dir = recipe.logging.log_dir if recipe.logging.visualdl else None
    if recipe.pruning is not None:
        pruning = recipe.pruning
        callbacks.append(PruneCallback(
            ratios=ratios, criterion=pruning.criterion, input_shape=list(recipe.input_shape),
            skip=list(pruning.skip), round_to=pruning.round_to, schedule=pruning.schedule,
            bn_l1=pruning.bn_l1, log_dir=log_dir, log_freq=recipe.logging.log_freq,
            resume_from=resume_from))
        return callbacks
    callbacks.append(FiniteLossGuard())
    if log_dir is not None:
        callbacks.append(VisualDLLogger(log_dir, log_freq=recipe.logging.log_freq,
                                        input_shape=list(recipe.input_shape)))
    return callbacks


def accuracy_metric(num_classes: Optional[int]) -> paddle.metric.Accuracy:
    return paddle.metric.Accuracy(topk=(1, 5) if (num_classes or 0) > 5 else (1,))


def eval_accuracy(logs: Dict[str, Any]) -> Dict[str, float]:
    """``{"acc": top-1[, "acc_top5": top-5]}`` from ``Model.evaluate`` logs."""
    out = {}
    for key, value in logs.items():
        if key.startswith("acc"):
            value = float(np.asarray(value).reshape(-1)[0])
            out["acc" if key in ("acc", "acc_top1") else key] = value
    return out


def structure(network: paddle.nn.Layer, input_shape, keys=SUMMARY_KEYS) -> Dict[str, Any]:
    numbers = profile(network, list(input_shape))
    return {k: numbers[k] for k in keys if k in numbers}


# -------------------------------------------------------------------------- run
def dry_run_recipe(job: Job, output_dir: Optional[str] = None) -> Job:
    """The recipe shrunk for a dry run: synthetic data of its input shape, 2 epochs of
    2 steps at batch 2, no pretrained weights, the final pruning one-shot at epoch 0."""
    raw = job.recipe.to_dict()
    notes = []
    out = output_dir or tempfile.mkdtemp(prefix=f"slim-dry-{job.recipe.name}-")
    raw["output_dir"] = out
    raw["logging"]["log_dir"] = os.path.join(out, "logs")
    raw["logging"]["log_freq"] = 1
    raw["checkpoint"]["save_dir"] = os.path.join(out, "checkpoints")
    raw["checkpoint"]["save_freq"] = 1
    if raw["model"].get("pretrained"):
        notes.append(f"dry run: pretrained weights {raw['model']['pretrained']} ignored")
        raw["model"]["pretrained"] = None
    data = raw["data"]
    raw["data"] = {"source": "synthetic", "num_classes": data["num_classes"],
                   "image_size": data["image_size"], "train_samples": DRY_STEPS * DRY_BATCH,
                   "samples": DRY_BATCH}
    train = raw["train"]
    train.update(epochs=DRY_EPOCHS, batch_size=DRY_BATCH, eval_every=1)
    if train["lr"]["schedule"] == "piecewise":
        train["lr"]["milestones"] = [1]
    pruning = raw.get("pruning")
    if pruning is not None:
        pruning["schedule"] = {"kind": "oneshot", "epoch": 0}
        if pruning["strategy"] == "sensitive" and not os.path.isfile(job.sensitivities_path()):
            notes.append(f"dry run: no sensitivities file {job.sensitivities_path()}; a uniform "
                         f"ratio to the same FLOPs target stands in")
            pruning.update(strategy="uniform", sensitivities=None)
    notes.append(f"dry run: {DRY_EPOCHS} epochs x {DRY_STEPS} steps of batch {DRY_BATCH} on "
                 f"synthetic {list(job.recipe.input_shape[1:])} data, final pruning one-shot "
                 f"at epoch 0, writing to {out}")
    return Job(load_recipe(raw), job.base_dir, job.source, job.notes + tuple(notes), dry_run=True)


def seed_from(recipe: Recipe) -> None:
    """Seeds Paddle and numpy with ``train.seed`` (unless null), so a network built
    from scratch gets the same initial weights in every command."""
    if recipe.train.seed is not None:
        paddle.seed(recipe.train.seed)
        np.random.seed(recipe.train.seed)


LOCK_FILE = ".lock"


def run_directories(recipe: Recipe) -> List[str]:
    """The output directory, and the checkpoint and log directories if elsewhere."""
    dirs = [recipe.output_dir, recipe.checkpoint.save_dir]
    if recipe.logging.visualdl:
        dirs.append(recipe.logging.log_dir)
    return list(dict.fromkeys(os.path.normpath(d) for d in dirs))


def check_writable(directory: str) -> None:
    """Creates ``directory`` and writes a probe file in it; SlimError if it cannot."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise SlimError(f"output directory {directory} is not writable ({err.strerror or err}); "
                        f"choose another with -o output_dir=DIR") from None


def holds_files(path: str) -> bool:
    return not os.path.isdir(path) or any(holds_files(os.path.join(path, n)) for n in os.listdir(path))


def check_fresh(recipe: Recipe) -> None:
    """SlimError if a run directory already holds files (of an earlier run)."""
    for directory in filter(os.path.isdir, run_directories(recipe)):
        found = sorted(n for n in os.listdir(directory)
                       if n != LOCK_FILE and holds_files(os.path.join(directory, n)))
        if found:
            raise SlimError(f"{directory} already holds a run ({', '.join(found[:3])}"
                            f"{', ...' if len(found) > 3 else ''}): continue it with --resume, "
                            f"or write elsewhere with -o output_dir=DIR (or delete {directory})")


@contextlib.contextmanager
def locked_run_directory(recipe: Recipe, resume: bool):
    """On rank 0: checks the run directories are writable (and, unless ``resume``,
    empty), then holds an exclusive lock on ``<output_dir>/.lock`` for the run."""
    if not is_rank0():
        yield
        return
    check_writable(recipe.output_dir)
    lock_path = os.path.join(recipe.output_dir, LOCK_FILE)
    with open(lock_path, "a", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise SlimError(f"{recipe.output_dir} is in use by another run (it holds "
                            f"{lock_path}): wait for it, or write elsewhere with "
                            f"-o output_dir=DIR") from None
        if not resume:
            check_fresh(recipe)
        for directory in run_directories(recipe):
            check_writable(directory)
        yield


def resume_checkpoint(recipe: Recipe) -> str:
    """The newest complete checkpoint of the recipe's run, for ``--resume``."""
    from slim_callbacks.callbacks.ledger import latest_checkpoint
    if recipe.pruning is None:
        raise ConfigError("--resume", True, "a recipe with a pruning section (the pruning "
                          "ledger is what a run resumes from)")
    summary = os.path.join(recipe.output_dir, "summary.json")
    if os.path.exists(summary):
        raise SlimError(f"the run in {recipe.output_dir} is finished ({summary} exists): "
                        f"nothing to resume")
    return latest_checkpoint(recipe.checkpoint.save_dir)


def check_finite_data(datasets: Dict[str, Any]) -> None:
    """ConfigError naming the array and the first image with NaN/Inf in in-memory data."""
    for name, dataset in datasets.items():
        images = getattr(dataset, "images", None)
        if not isinstance(images, np.ndarray) or images.dtype.kind != "f":
            continue
        bad = ~np.isfinite(images.reshape(len(images), -1)).all(axis=1)
        if bad.any():
            raise ConfigError("data", f"{name}[{int(np.argmax(bad))}] holds NaN/Inf",
                              f"finite pixel values in every image ({int(bad.sum())} "
                              f"bad images in {name})")


def amp_level(recipe: Recipe) -> Optional[str]:
    """``train.amp`` for ``Model.prepare(amp_configs=...)``; on CPU Paddle's AMP does
    nothing (training stays float32), which is said once here."""
    level = recipe.train.amp
    if level is not None and paddle.get_device().startswith("cpu"):
        logger.warning("train.amp %s has no effect on CPU (Paddle's AMP needs a GPU, XPU or "
                       "custom device): training in float32", level)
    return level


def write_summary(path: str, summary: Dict[str, Any]) -> None:
    from slim_callbacks.core.files import write_atomic
    write_atomic(path, json.dumps(summary, indent=1))


def run(job: Job, *, verbose: int = 2, emit: Callable[[str], None] = print,
        resume: bool = False) -> Dict[str, Any]:
    """Train and prune as the recipe says; returns (and, on rank 0, writes and prints)
    the summary.

    The run directories must be empty unless ``resume``, which continues from the
    newest complete checkpoint; ``<output_dir>/.lock`` is held for the run.
    """
    with locked_run_directory(job.recipe, resume):
        return _run(job, verbose, emit if is_rank0() else (lambda text: None), resume)


def _run(job: Job, verbose: int, emit: Callable[[str], None], resume: bool) -> Dict[str, Any]:
    recipe = job.recipe
    check_sensitivities_file(job)
    resume_from = resume_checkpoint(recipe) if resume else None
    started = time.time()
    for note in job.notes:
        emit(note)
    if resume_from is not None:
        emit(f"resuming from {resume_from}")
    seed_from(recipe)
    from slim_callbacks.app.data import build_datasets
    network = build_network(recipe)
    if recipe.model.pretrained is not None:
        load_pretrained(network, recipe.model.pretrained)
    elif job.dry_run and needs_trained_scales(recipe):
        stand_in_bn_scales(network, recipe.train.seed or 0)
        emit(f"dry run: BatchNorm scales drawn in [0.1, 1) as a stand-in for trained weights "
             f"(criterion {recipe.pruning.criterion} ties on initial scales)")
    ratios = final_ratios(job, network)
    callbacks = build_callbacks(job, ratios, verbose, resume_from)
    train_data, eval_data = build_datasets(recipe.data, recipe.input_shape)
    check_finite_data({"x_train": train_data, "x_test": eval_data})
    optimizer = build_optimizer(recipe, network)
    input_spec = [paddle.static.InputSpec([None, *recipe.input_shape[1:]], "float32", "image")]
    model = paddle.Model(network, inputs=input_spec)
    model.prepare(optimizer, paddle.nn.CrossEntropyLoss(), accuracy_metric(recipe.data.num_classes),
                  amp_configs=amp_level(recipe))
    batch, workers = recipe.train.batch_size, recipe.data.num_workers

    before = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                          verbose=0))
    before.update(structure(network, recipe.input_shape))
    model.fit(train_data, eval_data, epochs=recipe.train.epochs, batch_size=batch,
              eval_freq=recipe.train.eval_every, log_freq=recipe.logging.log_freq,
              save_dir=recipe.checkpoint.save_dir, save_freq=recipe.checkpoint.save_freq,
              verbose=verbose, shuffle=True, num_workers=workers, callbacks=callbacks)
    after = eval_accuracy(model.evaluate(eval_data, batch_size=batch, num_workers=workers,
                                         verbose=0))
    after.update(structure(network, recipe.input_shape))
    summary = {"recipe": recipe.name, "before": before, "after": after,
               "flops_reduction": 1 - after["macs"] / before["macs"],
               "wall_time_s": round(time.time() - started, 1),
               "output_dir": recipe.output_dir}
    path = os.path.join(recipe.output_dir, "summary.json")
    if is_rank0():
        write_summary(path, summary)
    emit(summary_table(summary))
    emit(f"summary written to {path}")
    return summary


def summary_table(summary: Dict[str, Any]) -> str:
    """The before/after table that ``slim-callbacks run`` ends with."""
    b, a = summary["before"], summary["after"]
    rows = [("top-1 accuracy", f"{b['acc']:.4f}", f"{a['acc']:.4f}")]
    if "acc_top5" in b:
        rows.append(("top-5 accuracy", f"{b['acc_top5']:.4f}", f"{a['acc_top5']:.4f}"))
    rows += [("MACs", f"{b['macs']:,}", f"{a['macs']:,}"),
             ("GFLOPs (2 x MACs)", f"{b['gflops']:.3f}", f"{a['gflops']:.3f}"),
             ("params", f"{b['params']:,}", f"{a['params']:,}"),
             ("size MB (float32)", f"{b['size_mb']:.1f}", f"{a['size_mb']:.1f}")]
    return table(rows, ("", "before", "after")) + \
        f"\nFLOPs reduction: {summary['flops_reduction']:.2%}"


def table(rows, header) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [str(row[0]).ljust(widths[0])] + [str(c).rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------- plan
def planning_network(job: Job, emit: Callable[[str], None]) -> paddle.nn.Layer:
    """The recipe's network as ``run`` starts it: seeded, with the pretrained weights
    when the file exists (else, for ``opt_slim``, stand-in BatchNorm scales)."""
    recipe = job.recipe
    seed_from(recipe)
    network = build_network(recipe)
    pretrained = recipe.model.pretrained
    if pretrained is not None and os.path.isfile(pretrained):
        load_pretrained(network, pretrained)
    elif needs_trained_scales(recipe):
        stand_in_bn_scales(network, recipe.train.seed or 0)
        emit("note: BatchNorm scales drawn in [0.1, 1) as a stand-in for trained weights "
             "(opt_slim ties on initial scales); the structure is illustrative only")
    return network


def check(job: Job, emit: Callable[[str], None] = lambda s: None) -> None:
    """Builds what :func:`run` builds before loading data: the network (and pretrained
    weights if present), the final ratios and the pruning callback with its schedule,
    so every recipe error ``run`` would meet comes first, before any work. Missing
    files that only ``run`` needs (weights, the sensitivities file) are notes."""
    recipe = job.recipe
    for note in job.notes:
        emit(note)
    pretrained = recipe.model.pretrained
    if pretrained is not None and not os.path.isfile(pretrained):
        emit(f"note: model.pretrained: {pretrained} not found (run needs it)")
    network = planning_network(job, emit)
    path = job.sensitivities_path()
    if path is not None and not os.path.isfile(path):
        emit(f"note: {missing_sensitivities_message(job)}")
        check_schedule(recipe, None)
        return
    build_callbacks(job, final_ratios(job, network))


def plan(job: Job, emit: Callable[[str], None] = lambda s: None) -> Dict[str, Any]:
    """The recipe's final pruning applied to a freshly built network (no training).

    Returns ``{"before": {...}, "after": {...}, "flops_reduction", "layers": {name:
    [before, after]}, "ratios"}``; ``flops_reduction`` is in MACs.
    """
    from slim_callbacks.engine.pruner import prune
    recipe = job.recipe
    check_sensitivities_file(job)
    for note in job.notes:
        emit(note)
    network = planning_network(job, emit)
    shape = list(recipe.input_shape)
    before = structure(network, shape, PLAN_KEYS)
    widths_before = layer_widths(network)
    ratios = final_ratios(job, network)
    if ratios is not None:
        pruning = recipe.pruning
        prune(network, shape, ratios, pruning.criterion, skip=list(pruning.skip),
              round_to=pruning.round_to)
    after = structure(network, shape, PLAN_KEYS)
    widths_after = layer_widths(network)
    return {"before": before, "after": after,
            "flops_reduction": 1 - after["macs"] / before["macs"],
            "layers": {name: [w, widths_after.get(name, 0)] for name, w in widths_before.items()},
            "ratios": ratios}


def plan_text(result: Dict[str, Any]) -> str:
    b, a = result["before"], result["after"]

    def change(key):
        return f"{(a[key] - b[key]) / b[key]:+.2%}" if b[key] else ""
    rows = [("MACs", f"{b['macs']:,}", f"{a['macs']:,}", change("macs")),
            ("GFLOPs (2 x MACs)", f"{b['gflops']:.3f}", f"{a['gflops']:.3f}", change("gflops")),
            ("GFLOPs (PaddleSlim legacy)", f"{b['gflops_legacy']:.3f}", f"{a['gflops_legacy']:.3f}",
             change("gflops_legacy")),
            ("params", f"{b['params']:,}", f"{a['params']:,}", change("params")),
            ("size MB (float32)", f"{b['size_mb']:.1f}", f"{a['size_mb']:.1f}", change("size_mb"))]
    text = [table(rows, ("", "before", "after", "change"))]
    pruned = [(n, str(w0), str(w1)) for n, (w0, w1) in result["layers"].items() if w0 != w1]
    text.append(f"\nratios: {result['ratios']}")
    text.append(f"{len(pruned)} of {len(result['layers'])} conv/linear layers change width:")
    text.append(table(pruned, ("layer", "before", "after")) if pruned else "(none)")
    return "\n".join(text)


# ------------------------------------------------------------------ sensitivity
def run_sensitivity(job: Job, *, samples: Optional[int] = None, output: Optional[str] = None,
                    ratios: Sequence[float] = SENSITIVITY_RATIOS, workers: int = 1,
                    emit: Callable[[str], None] = print) -> Dict[str, Any]:
    """Writes the sensitivities JSON of the recipe's pruned layers (top-1 accuracy on
    the eval data, or ``samples`` of it), VisualDL curves and a PNG plot; ``workers``
    processes evaluate side by side (see :func:`~slim_callbacks.analysis.sensitivity.sensitivity`)."""
    from slim_callbacks.analysis.sensitivity import sensitivity
    from slim_callbacks.app.data import build_datasets, cap
    recipe, pruning = job.recipe, job.recipe.pruning
    if pruning is None:
        raise ConfigError("pruning", None, "a pruning section (its layers, criterion and "
                          "round_to are what the analysis uses)")
    path = output or job.sensitivities_path() or os.path.join(recipe.output_dir,
                                                               "sensitivities.json")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    seed_from(recipe)  # initial weights the same each time: a rerun resumes the file
    network = build_network(recipe)
    if recipe.model.pretrained is not None:
        load_pretrained(network, recipe.model.pretrained)
    else:
        emit("note: no model.pretrained: the analysis runs on initial weights")
    _, eval_data = build_datasets(recipe.data, recipe.input_shape)
    if samples is not None:
        eval_data = cap(eval_data, samples)
    loader = paddle.io.DataLoader(eval_data, batch_size=recipe.train.batch_size, shuffle=False,
                                  num_workers=recipe.data.num_workers)

    def eval_fn(net):
        net.eval()
        correct = total = 0
        with paddle.no_grad():
            for images, labels in loader:
                pred = net(images).argmax(axis=1).numpy()
                correct += int((pred == labels.numpy().reshape(-1)).sum())
                total += len(pred)
        return correct / max(total, 1)

    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    started = time.time()
    result = sensitivity(network, eval_fn, list(recipe.input_shape), layers=layers,
                         ratios=list(ratios), criterion=pruning.criterion, file=path,
                         skip=list(pruning.skip), round_to=pruning.round_to, workers=workers)
    emit(f"sensitivities of {len(result)} layers x {len(ratios)} ratios on "
         f"{len(eval_data)} samples in {time.time() - started:.1f} s -> {path}")
    log_dir = os.path.join(recipe.logging.log_dir, "sensitivity")
    write_curves(result, log_dir)
    emit(f"VisualDL curves (one chart per layer) -> {log_dir}")
    png = os.path.splitext(path)[0] + ".png"
    if plot_curves(result, png):
        emit(f"plot -> {png}")
    else:
        emit("note: matplotlib is not installed: no PNG plot (pip install matplotlib)")
    return {"file": path, "log_dir": log_dir, "sensitivities": result}


def write_curves(result: Dict[str, Dict[float, float]], log_dir: str) -> None:
    """One VisualDL scalar chart per layer, ``sensitivity/<layer>``, step = ratio in %."""
    from visualdl import LogWriter
    with LogWriter(logdir=log_dir) as writer:
        for name, losses in result.items():
            for ratio, loss in sorted(losses.items()):
                writer.add_scalar(f"sensitivity/{name}", value=float(loss),
                                  step=int(round(ratio * 100)))


def plot_curves(result: Dict[str, Dict[float, float]], png: str) -> bool:
    """All layers' loss-vs-ratio curves in one PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, losses in result.items():
        points = sorted(losses.items())
        ax.plot([r for r, _ in points], [l for _, l in points], marker="o", label=name)
    ax.set_xlabel("pruned ratio")
    ax.set_ylabel("relative accuracy loss")
    ax.legend(fontsize=6)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return True
