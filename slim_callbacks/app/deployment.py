"""What ``slim-callbacks run`` does with the final model (the recipe's ``deploy``
section): a verified export to ``<output_dir>/inference/``, and batch-1 latency of the
original and the pruned inference models measured side by side.

:func:`deploy_run` exports the pruned network (``inference/model.*``), and, when
``deploy.latency`` is on, the freshly built unpruned network (``inference/original/``),
then measures both with :func:`~slim_callbacks.latency.measure.measure_latency` in
Paddle Inference, oneDNN on, with 1 thread and with all cores. It returns the
``summary.json`` entries ``export`` and ``latency``; :func:`log_latency` writes the
latency as VisualDL scalars (``latency/<before|after|speedup>_<1_thread|all_cores>``).

:func:`export_run` is ``slim-callbacks export``: a run directory (or checkpoint) back
to a network (recipe + pruning ledger + weights), exported and verified.

Examples:
    >>> import paddle, tempfile
    >>> from slim_callbacks.app.schema import Recipe
    >>> recipe = Recipe(name="d", output_dir=tempfile.mkdtemp(), model={"name": "lenet"},
    ...                 data={"source": "mnist"}, deploy={"latency": False})
    >>> net = paddle.nn.Sequential(paddle.nn.Flatten(), paddle.nn.Linear(3 * 28 * 28, 10))
    >>> out = deploy_run(recipe, net, None, None)
    >>> sorted(out["export"]), out["latency"]
    (['dir', 'formats', 'max_abs_diff'], None)
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional

import numpy as np
import paddle

from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import SlimError
from slim_callbacks.deploy.export import check_onnx_available, export
from slim_callbacks.deploy.runtime import keeps_intermediates
from slim_callbacks.latency.measure import Latency, measure_latency

INFERENCE_DIR = "inference"
ORIGINAL_DIR = "original"
VERIFY_SAMPLES = 8
DRY_LATENCY = {"rounds": 2, "runs_per_round": 1, "warmup": 1}


def inference_dir(recipe: Recipe) -> str:
    """``<output_dir>/inference``: where ``run`` exports the final model."""
    return os.path.join(recipe.output_dir, INFERENCE_DIR)


def check_deploy(recipe: Recipe) -> None:
    """SlimError before any work if the recipe exports ONNX and its tools are missing."""
    if recipe.deploy.export and "onnx" in recipe.deploy.formats:
        check_onnx_available()


def verification_batch(dataset, batch: int = 1) -> Optional[np.ndarray]:
    """About the first 8 images of ``dataset`` as one float32 array whose length is a
    multiple of ``batch`` (the exported model's fixed batch; images repeat when the
    dataset has fewer); None if the dataset is empty.

    Examples:
        >>> data = [(np.full((1, 2, 2), i), 0) for i in range(5)]
        >>> [verification_batch(data, b).shape[0] for b in (1, 3, 8)]
        [5, 3, 8]
    """
    if dataset is None or len(dataset) == 0:
        return None
    count = max(batch, min(VERIFY_SAMPLES, len(dataset)) // batch * batch)
    return np.stack([np.asarray(dataset[i % len(dataset)][0], dtype="float32")
                     for i in range(count)])


def deploy_run(recipe: Recipe, network: paddle.nn.Layer,
               original: Optional[Callable[[], paddle.nn.Layer]], batch: Optional[np.ndarray],
               dry_run: bool = False, emit: Callable[[str], None] = lambda s: None
               ) -> Dict[str, Any]:
    """``{"export": {...} or None, "latency": {...} or None}`` for ``summary.json``.

    ``original`` builds the unpruned network (called only when latency is measured);
    ``batch`` is the real batch the export is verified on (None: seeded random).
    """
    deploy = recipe.deploy
    if not deploy.export:
        return {"export": None, "latency": None}
    shape = recipe.example_inputs
    folder = inference_dir(recipe)
    result = export(network, folder, shape, deploy.formats, inputs=batch)
    emit(f"exported the pruned model to {folder} ({', '.join(deploy.formats)}; verified: max "
         f"abs difference to dygraph {result.differences()})")
    exported = {"dir": folder, "formats": list(deploy.formats),
                "max_abs_diff": result.max_abs_diff}
    if not deploy.latency or original is None:
        if deploy.keep_intermediates:
            emit("note: deploy.keep_intermediates is unused: latency is not measured")
        return {"export": exported, "latency": None}
    before = export(original(), os.path.join(folder, ORIGINAL_DIR), shape, ("paddle",),
                    inputs=batch)
    exported["original_dir"] = before.directory
    options = dict(DRY_LATENCY) if dry_run else {"rounds": deploy.latency_rounds}
    options["keep_intermediates"] = deploy.keep_intermediates
    if dry_run:
        emit("dry run: latency from 2 runs per model, indicative only")
    first = None if recipe.model.inputs else [1, *shape[1:]]  # else: the models' own shapes
    latency = measure_both(before.prefix, result.prefix, input_shape=first, **options)
    return {"export": exported, "latency": latency}


def measure_both(before_prefix: str, after_prefix: str, **options) -> Dict[str, Any]:
    """Latency of the original and the pruned model, side by side, oneDNN on: with one
    thread, and with all cores (when there is more than one)."""
    prefixes = {"before": before_prefix, "after": after_prefix}
    cores = os.cpu_count() or 1
    keep = keeps_intermediates(options.get("keep_intermediates", False))
    out: Dict[str, Any] = {"batch": 1, "onednn": True, "runtime": "paddle_inference",
                           "keep_intermediates": keep}
    for key, threads in (("1_thread", 1), ("all_cores", cores)):
        if key == "all_cores" and cores == 1:
            continue
        before, after = measure_latency(prefixes, threads=threads, onednn=True, **options)
        out[key] = latency_entry(before, after)
    return out


def latency_entry(before: Latency, after: Latency) -> Dict[str, Any]:
    """One thread setting's numbers: medians, p25/p75 spreads, speedup, samples.

    Examples:
        >>> b = Latency("before", "b", 2.0, 1.9, 2.1, 1.8, 2.5, 10, 1, True)
        >>> a = Latency("after", "a", 1.0, 0.9, 1.1, 0.8, 1.5, 10, 1, True)
        >>> latency_entry(b, a)["speedup"]
        2.0
    """
    return {"threads": before.threads, "samples": before.samples,
            "before_ms": before.median_ms, "after_ms": after.median_ms,
            "before_p25_ms": before.p25_ms, "before_p75_ms": before.p75_ms,
            "after_p25_ms": after.p25_ms, "after_p75_ms": after.p75_ms,
            "speedup": before.median_ms / after.median_ms}


LATENCY_SETTINGS = ("1_thread", "all_cores")
#: ``pruning.strategy_options`` of the latency strategy that shape its latency model.
MODEL_OPTIONS = ("threads", "onednn", "cache_dir", "grid", "keep_intermediates")


def predicted_vs_measured(recipe: Recipe, original: paddle.nn.Layer, plan, round_to: int,
                          latency: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The summary's ``latency_strategy`` entry: the latency the strategy's (cached)
    model predicts for the final ``plan`` on the unpruned ``original``, beside the
    reduction measured at the end of the run with the same thread count."""
    from slim_callbacks.latency.strategy import latency_prediction
    pruning = recipe.pruning
    options = {k: v for k, v in pruning.strategy_options.items() if k in MODEL_OPTIONS}
    layers = None if tuple(pruning.layers) == ("*",) else list(pruning.layers)
    predicted = latency_prediction(original, recipe.example_inputs, plan, layers=layers,
                                   skip=list(pruning.skip), round_to=round_to, **options)
    threads = int(options.get("threads", 1))
    return {"target_reduction": pruning.target_latency_reduction, "threads": threads,
            "onednn": bool(options.get("onednn", True)),
            "keep_intermediates": bool(options.get("keep_intermediates", False)), **predicted,
            "measured_reduction": measured_reduction(latency, threads),
            "measured_keep_intermediates": bool((latency or {}).get("keep_intermediates"))}


def measured_reduction(latency: Optional[Dict[str, Any]], threads: int) -> Optional[float]:
    """``1 - after/before`` of the measured setting with ``threads`` threads, or None.

    Examples:
        >>> measured_reduction({"1_thread": {"threads": 1, "before_ms": 4.0, "after_ms": 2.2}}, 1)
        0.45
    """
    for setting in LATENCY_SETTINGS:
        entry = (latency or {}).get(setting)
        if entry and entry["threads"] == threads:
            return round(1 - entry["after_ms"] / entry["before_ms"], 6)
    return None


def latency_scalars(latency: Optional[Dict[str, Any]]) -> Dict[str, float]:
    """``{VisualDL tag: value}`` of a summary's latency entry.

    Examples:
        >>> latency_scalars({"1_thread": {"before_ms": 2.0, "after_ms": 1.0, "speedup": 2.0}})
        {'latency/before_ms_1_thread': 2.0, 'latency/after_ms_1_thread': 1.0, 'latency/speedup_1_thread': 2.0}
    """
    tags = {}
    for setting in LATENCY_SETTINGS:
        entry = (latency or {}).get(setting)
        if entry:
            for key in ("before_ms", "after_ms", "speedup"):
                tags[f"latency/{key}_{setting}"] = float(entry[key])
    return tags


def log_latency(log_dir: str, latency: Optional[Dict[str, Any]], step: int) -> None:
    """The latency scalars at ``step`` (the last epoch), in ``<log_dir>/latency`` (a run
    of its own in VisualDL; ``latency-2``... after a resume)."""
    tags = latency_scalars(latency)
    if not tags:
        return
    from visualdl import LogWriter

    from slim_callbacks.callbacks.visualdl import new_session_dir
    with LogWriter(logdir=new_session_dir(log_dir, "latency")) as writer:
        for tag, value in tags.items():
            writer.add_scalar(tag=tag, value=value, step=int(step))


# ------------------------------------------------------------ slim-callbacks export
RECIPE_FILE = "recipe.yaml"
FINAL = "final"


def _checkpoint_prefix(path: str) -> Optional[str]:
    """``path`` as a checkpoint prefix if a ledger or weights file belongs to it."""
    from slim_callbacks.callbacks.ledger import SUFFIX
    from slim_callbacks.core.weights import WEIGHT_SUFFIXES
    for suffix in (SUFFIX, *WEIGHT_SUFFIXES, ".pdparams"):
        prefix = path[:-len(suffix)] if path.endswith(suffix) else path
        if os.path.isfile(prefix + suffix):
            return prefix
    return None


def newest_checkpoint(directory: str) -> str:
    """``<directory>/final`` if the run finished, else its newest ``<epoch>`` checkpoint."""
    from slim_callbacks.callbacks.ledger import checkpoint_epochs
    final = os.path.join(directory, FINAL)
    if _checkpoint_prefix(final):
        return final
    epochs = checkpoint_epochs(directory)
    if not epochs:
        raise SlimError(f"no checkpoint in {directory} (no final.pdparams, no "
                        f"<epoch>.pruning.json): has the run saved one yet?")
    return os.path.join(directory, str(epochs[-1]))


def locate_run(source: str, recipe_file: Optional[str] = None):
    """``(recipe file, checkpoint prefix)`` of a run directory or a checkpoint.

    A run directory (what ``slim-callbacks run`` writes) holds ``recipe.yaml`` and
    ``checkpoints/``; a checkpoint prefix (``.../checkpoints/final``, or one of its
    files) finds ``recipe.yaml`` in its own directory or the one above.
    """
    if os.path.isdir(source):
        run_dir = source
        checkpoints = os.path.join(source, "checkpoints")
        prefix = newest_checkpoint(checkpoints if os.path.isdir(checkpoints) else source)
    else:
        prefix = _checkpoint_prefix(source)
        if prefix is None:
            raise SlimError(f"{source}: no such run directory or checkpoint (give a run's "
                            f"output directory, e.g. output/quickstart, or a checkpoint "
                            f"prefix such as output/quickstart/checkpoints/final)")
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(prefix)))
    if recipe_file is None:
        here = source if os.path.isdir(source) else os.path.dirname(os.path.abspath(prefix))
        candidates = [os.path.join(here, RECIPE_FILE),
                      os.path.join(os.path.dirname(os.path.abspath(here)), RECIPE_FILE)]
        recipe_file = next((c for c in candidates if os.path.isfile(c)), None)
        if recipe_file is None:
            raise SlimError(f"no {RECIPE_FILE} in {run_dir} (runs before slim_callbacks "
                            f"stored their recipe): pass the run's recipe with --recipe FILE")
    elif not os.path.isfile(recipe_file):
        raise SlimError(f"--recipe: {recipe_file} not found (a recipe YAML file)")
    return recipe_file, prefix


def rebuild(recipe: Recipe, prefix: str) -> paddle.nn.Layer:
    """The trained network of checkpoint ``prefix``: built from the recipe, the pruning
    ledger replayed (:func:`~slim_callbacks.callbacks.ledger.load_pruned`), weights loaded."""
    from slim_callbacks.app.builders import build_network, seed_from
    from slim_callbacks.callbacks.ledger import load_pruned, weights_file
    from slim_callbacks.core.weights import load_state, state_digest
    seed_from(recipe)
    network = build_network(recipe)
    if recipe.pruning is not None:
        return load_pruned(network, prefix)
    weights = weights_file(prefix)
    if not os.path.isfile(weights):
        raise SlimError(f"{weights} is missing: the checkpoint {prefix} has no weights")
    state = load_state(weights, "checkpoint")
    pickled = prefix + ".pdparams"
    if weights != pickled and os.path.isfile(pickled) and (
            state_digest(state) != state_digest(load_state(pickled, "checkpoint"))):
        raise SlimError(f"{weights} holds other weights than {pickled}, which the run "
                        f"saved: delete or move {weights} to export {pickled}")
    network.set_state_dict(state)
    return network


def eval_batch(recipe: Recipe, emit: Callable[[str], None]) -> Optional[np.ndarray]:
    """A real batch of the recipe's eval data, or None (with a note) if it cannot be read."""
    from slim_callbacks.app.data import build_datasets
    if recipe.model.inputs is not None:
        return None  # the image data does not fit model.inputs: a seeded random batch
    try:
        _, evaluation = build_datasets(recipe.data, recipe.input_shape)
    except SlimError as err:
        emit(f"note: the recipe's eval data is not available ({err}); verifying on a "
             f"seeded random batch")
        return None
    return verification_batch(evaluation, int(recipe.input_shape[0]))


def default_out(prefix: str) -> str:
    """``inference/`` beside the checkpoints directory for the final checkpoint (where
    ``run`` exports), ``inference-<epoch>/`` for an earlier one.

    Examples:
        >>> default_out("out/checkpoints/final"), default_out("out/checkpoints/3")
        ('out/inference', 'out/inference-3')
    """
    name = os.path.basename(prefix)
    folder = INFERENCE_DIR if name == FINAL else f"{INFERENCE_DIR}-{name}"
    return os.path.join(os.path.dirname(os.path.dirname(prefix)), folder)


def export_run(source: str, formats=("paddle",), out: Optional[str] = None,
               recipe_file: Optional[str] = None,
               emit: Callable[[str], None] = lambda s: None):
    """``slim-callbacks export``: rebuild the network of a run directory or checkpoint,
    export it verified to ``out`` (default: ``inference/`` beside the checkpoints
    directory, see :func:`default_out`). Returns the :class:`~slim_callbacks.deploy.export.ExportResult`."""
    from slim_callbacks.app.job import load_job
    from slim_callbacks.deploy.export import check_formats
    formats = check_formats(formats, "--format")
    if "onnx" in formats:
        check_onnx_available()
    if not os.path.exists(source) and _checkpoint_prefix(source) is None:
        raise SlimError(f"{source}: no such run directory or checkpoint (give a run's "
                        f"output directory, e.g. output/quickstart, or a checkpoint prefix "
                        f"such as output/quickstart/checkpoints/final)")
    recipe_file, prefix = locate_run(source, recipe_file)
    recipe = load_job(recipe_file).recipe
    network = rebuild(recipe, prefix)
    if out is None:
        out = default_out(prefix)
    batch = eval_batch(recipe, emit)
    result = export(network, out, recipe.example_inputs, formats, inputs=batch)
    on = f"{len(batch)} eval images" if batch is not None else "a random batch"
    emit(f"exported {prefix} ({recipe.model.name}, recipe {recipe_file}) to {out}: "
         f"{', '.join(os.path.basename(f) for files in result.files.values() for f in files)}"
         f"; verified on {on}, max abs difference to dygraph {result.differences()}")
    return result
