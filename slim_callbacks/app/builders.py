"""What a recipe builds: the network (and its pretrained weights), the learning rate
and optimizer, the final pruning ratios, and the callbacks of ``paddle.Model.fit``.

:func:`register_model` adds a model that recipes may name; :func:`model_factory` is the
only way a ``model.name`` reaches code, so a recipe cannot call anything but a
``paddle.nn.Layer`` subclass or a registered factory.

Examples:
    >>> from slim_callbacks.app.job import load_job
    >>> job = load_job({"name": "b", "model": {"name": "mobilenet_v1",
    ...                 "kwargs": {"scale": 0.25}}, "data": {"source": "synthetic"},
    ...                 "pruning": {"ratios": 0.5}})
    >>> network = build_network(job.recipe)
    >>> pruner = recipe_pruner(job, network)
    >>> pruner.ratios, [type(c).__name__ for c in build_callbacks(job, pruner)]
    (0.5, ['LRScheduler', 'PruneCallback', 'VisualDLLogger'])
"""
from __future__ import annotations

import importlib
import inspect
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import paddle

from slim_callbacks.app.job import Job
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.checks import is_int, is_real
from slim_callbacks.core.errors import ConfigError, SlimError
from slim_callbacks.integrations.paddlenlp import ernie

logger = logging.getLogger(__name__)

#: Model name -> factory returning a ``paddle.nn.Layer``; ``model.name`` may name any of
#: these (or ``module:callable`` for one of them, or a ``paddle.nn.Layer`` subclass).
MODELS: Dict[str, Callable[..., paddle.nn.Layer]] = {
    **{name: getattr(paddle.vision.models, name) for name in paddle.vision.models.__all__},
    "ernie": ernie,  # paddlenlp's ERNIE classifier, (input_ids, token_type_ids) -> logits
}
MODEL_ALLOWED = ("a paddle.nn.Layer subclass, a paddle.vision.models function or a "
                 "function registered with slim_callbacks.register_model")


def register_model(name: str, factory: Callable[..., paddle.nn.Layer]) -> None:
    """Makes ``factory`` a model that recipes may name: ``model.name: <name>``, or
    ``model.name: module:function`` for the function itself.

    Examples:
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
        return is_int(value)
    if isinstance(default, float):
        return is_real(value)
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


def load_pretrained(network: paddle.nn.Layer, path: str, key: str = "model.pretrained") -> None:
    """Loads a ``.safetensors`` or ``.pdparams`` state dict; every key must fit the
    network. Errors name the recipe ``key`` the path came from."""
    from slim_callbacks.core.weights import load_state
    if not os.path.isfile(path):
        hint = ("download the weights, or -o model.pretrained=null to train from scratch"
                if key == "model.pretrained" else "a file of weights, e.g. a checkpoint's .pdparams")
        raise SlimError(f"{key}: {path} not found ({hint})")
    state = load_state(path, key)
    own = network.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and list(state[k].shape) != list(own[k].shape)]
    if missing or wrong:
        raise SlimError(f"{key}: {path} does not fit {type(network).__name__}: "
                        f"{len(missing)} missing keys {missing[:3]}, {len(wrong)} shape "
                        f"mismatches {wrong[:3]}")
    network.set_state_dict(state)
    logger.info("loaded pretrained weights from %s", path)


def build_teacher(recipe: Recipe) -> Optional[paddle.nn.Layer]:
    """The network of ``pruning.distill.teacher`` with its weights loaded (None: no
    teacher given, the network right before the first event teaches); errors name
    ``pruning.distill.teacher.<key>``.

    Examples:
        >>> from slim_callbacks.app.job import load_job
        >>> job = load_job({"name": "t", "model": {"name": "mobilenet_v1"},
        ...                 "data": {"source": "synthetic"}, "pruning": {"ratios": 0.5,
        ...                 "distill": {"teacher": "missing.pdparams"}}})
        >>> try:
        ...     build_teacher(job.recipe)
        ... except SlimError as err:
        ...     print(str(err).split(" (")[0])
        pruning.distill.teacher.pretrained: missing.pdparams not found
    """
    import dataclasses

    from slim_callbacks.app.schema import ModelConfig
    distill = recipe.pruning.distill if recipe.pruning is not None else None
    if distill is None or distill.teacher is None:
        return None
    spec, prefix = distill.teacher, "pruning.distill.teacher"
    if spec.name is None:
        model = dataclasses.replace(recipe.model, pretrained=None)
    else:
        model = ModelConfig(name=spec.name, kwargs=spec.kwargs)
    try:
        network = build_network(dataclasses.replace(recipe, model=model))
    except ConfigError as err:
        key = str(err.key)
        if not key.startswith("model"):
            raise
        raise ConfigError(prefix + key[len("model"):], err.value, err.allowed) from None
    load_pretrained(network, spec.pretrained, f"{prefix}.pretrained")
    return network


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


def recipe_pruner(job: Job, network: paddle.nn.Layer, announce: Optional[Callable] = None):
    """The recipe's :class:`~slim_callbacks.pruning.Pruner` on ``network``, prepared: its
    strategy and ``round_to: auto`` resolved once, without changing the network
    (:attr:`~slim_callbacks.pruning.Pruner.ratios` are the final ratios, a float or
    ``{pattern/group: ratio}``); ``plan`` prunes with it and ``run`` hands its answer and
    trace to :class:`PruneCallback`. None when the recipe does not prune. ``announce``
    is called with the pruner before it resolves anything (the measuring line). Errors
    name the recipe key (``pruning.strategy_options.max_ratio``)."""
    from slim_callbacks.analysis.strategies import RECIPE_KEYS
    from slim_callbacks.pruning.pruner import Pruner
    from slim_callbacks.pruning.schedules import OneShot
    pruning = job.recipe.pruning
    if pruning is None:
        return None
    check_sensitivities_file(job)
    # the schedule is the callback's (check_schedule first names pruning.schedule keys)
    pruner = Pruner(network, job.recipe.example_inputs, pruning.spec(job.sensitivities_path()),
                    schedule=OneShot(0))
    if announce is not None:
        announce(pruner)
    try:
        return pruner.prepare()
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
    from slim_callbacks.pruning.schedule_factory import schedule_from_dict
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
    """LR stepping per epoch, pruning (its training aids switched on in its spec;
    resuming from ``resume_from``) or the NaN/Inf guard, and VisualDL; the schedule is
    checked against the final ``ratios`` first. ``ratios``: the final ratios, or the
    :func:`recipe_pruner` (its ratios, resolved ``round_to`` and trace go to the
    callback, which then resolves and traces nothing again)."""
    from slim_callbacks.callbacks import FiniteLossGuard, PruneCallback, VisualDLLogger
    from slim_callbacks.pruning import PruningSpec
    from slim_callbacks.pruning.pruner import Pruner
    recipe = job.recipe
    pruner = ratios if isinstance(ratios, Pruner) else None
    ratios = pruner.ratios if pruner is not None else ratios
    check_schedule(recipe, ratios)
    callbacks: List[paddle.callbacks.Callback] = [
        paddle.callbacks.LRScheduler(by_step=False, by_epoch=True)]
    if recipe.pruning is not None:
        pruning = recipe.pruning
        spec = PruningSpec(
            ratios=ratios, criterion=pruning.criterion, skip=list(pruning.skip),
            round_to=pruning.round_to if pruner is None else pruner.round_to,
            schedule=pruning.schedule, fold_bn_shift=pruning.fold_bn_shift,
            structure=dict(pruning.structure), aids=pruning.aids(build_teacher(recipe)))
        callbacks.append(PruneCallback(spec=spec, example_inputs=recipe.example_inputs,
                                       resume_from=resume_from,
                                       graph=None if pruner is None else pruner.graph))
    else:
        callbacks.append(FiniteLossGuard())
    if recipe.logging.visualdl:
        callbacks.append(VisualDLLogger(recipe.logging.log_dir, log_freq=recipe.logging.log_freq,
                                        example_inputs=recipe.example_inputs))
    return callbacks


def accuracy_metric(num_classes: Optional[int]) -> paddle.metric.Accuracy:
    return paddle.metric.Accuracy(topk=(1, 5) if (num_classes or 0) > 5 else (1,))


def seed_from(recipe: Recipe) -> None:
    """Seeds Paddle and numpy with ``train.seed`` (unless null), so a network built
    from scratch gets the same initial weights in every command."""
    if recipe.train.seed is not None:
        paddle.seed(recipe.train.seed)
        np.random.seed(recipe.train.seed)
