"""The ``slim-callbacks`` command (also ``python -m slim_callbacks``).

Subcommands::

    slim-callbacks run [RECIPE] [-o key=value ...] [--dry-run] [--output-dir DIR] [--resume]
                       [--no-latency]
    slim-callbacks export RUN_DIR_OR_CHECKPOINT [--format paddle|onnx ...] [--out DIR]
                          [--recipe FILE]
    slim-callbacks plan [RECIPE] [--json] [--no-measure] [-o key=value ...]
    slim-callbacks check [RECIPE] [--no-measure] [-o key=value ...]
    slim-callbacks sensitivity RECIPE [--samples N] [--workers N] [--output FILE] [-o key=value ...]
    slim-callbacks dashboard [DIR ...] [--port P] [--host H] [--no-serve]
    slim-callbacks latency MODEL_DIR [MODEL_DIR ...] [--threads N] [--no-onednn]
                           [--keep-intermediates]
    slim-callbacks prune-model MODEL_DIR --out DIR [--target macs=0.5] [--data IMAGES]
                               [--epochs N] [--strategy S] [--resume] [--no-latency]

RECIPE is a YAML file; a name such as ``quickstart`` or ``mobilenetv1/baseline`` that
is not a file is looked up among the bundled recipes; without RECIPE the quickstart
runs. User errors (a bad recipe key, a missing file) print one line to stderr and exit
with status 2. Every command takes ``-q``/``--quiet`` (only warnings, errors and the
results) or ``-v``/``--debug`` (debug log lines, Paddle's warnings unfiltered); Paddle's
known repeated warnings are otherwise filtered inside the command
(:mod:`slim_callbacks.core.quiet`). The work itself lives in
:mod:`slim_callbacks.app.runner`.

Examples:
    >>> main(["check", "quickstart", "-o", "train.batch_size=16"])   # doctest: +ELLIPSIS
    name: quickstart
    ...
    0
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from typing import Optional, Sequence

from slim_callbacks.app import prune_model_args
from slim_callbacks.core.checks import check_int
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.example_inputs import as_inputs
from slim_callbacks.core.quiet import COMMAND, quiet_paddle
from slim_callbacks.core.version import version_line

PROG = COMMAND
DEFAULT_RECIPE = "quickstart"
EXIT_USAGE = 2
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # slim_callbacks/
RECIPE_DIRS = (os.path.join(_PACKAGE_DIR, "recipes"),                     # installed
               os.path.join(os.path.dirname(_PACKAGE_DIR), "recipes"))    # source checkout


def find_recipe(name: str) -> str:
    """``name`` if it is a file, else the bundled recipe of that name.

    Examples:
        >>> os.path.basename(find_recipe("quickstart"))
        'quickstart.yaml'
    """
    if os.path.isfile(name):
        return name
    stem = name if name.endswith((".yaml", ".yml")) else name + ".yaml"
    for folder in RECIPE_DIRS:
        for candidate in (os.path.join(folder, stem),
                          os.path.join(folder, stem.replace("recipes/", "", 1))):
            if os.path.isfile(candidate):
                return candidate
    raise SlimError(f"recipe file not found: {name} (a YAML path, or a bundled name such as "
                    f"quickstart or mobilenetv1/uniform_l1norm_f50)")


#: Each subcommand's ``--help`` example (its argparse epilog).
EXAMPLES = {
    "run": ["slim-callbacks run quickstart",
            "slim-callbacks run quickstart -o train.epochs=12 --output-dir output/try -q",
            "slim-callbacks run mobilenetv1/uniform_l1norm_f50 --dry-run"],
    "export": ["slim-callbacks export output/quickstart --format paddle --format onnx"],
    "plan": ["slim-callbacks plan quickstart -o pruning.target_flops_reduction=0.3",
             "slim-callbacks plan mobilenetv1/uniform_l1norm_f50 --explain"],
    "check": ["slim-callbacks check quickstart -o train.batch_size=64"],
    "sensitivity": ["slim-callbacks sensitivity mobilenetv1/sensitive_l1norm_f50 --samples 500 "
                    "--workers 2"],
    "dashboard": ["slim-callbacks dashboard output --no-serve"],
    "latency": ["slim-callbacks latency output/quickstart/inference/original "
                "output/quickstart/inference --threads 1"],
    "prune-model": prune_model_args.EXAMPLE,
}


def _verbosity_parser() -> argparse.ArgumentParser:
    """``-q``/``--quiet`` and ``-v``/``--debug``, shared by every subcommand."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print only warnings, errors and the results (run: no progress, "
                            "only the final table)")
    group.add_argument("-v", "--debug", action="store_true",
                       help="debug log lines, and Paddle's warnings unfiltered")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Channel pruning for PaddlePaddle inside Model.fit(), from a "
                               "YAML recipe.",
        epilog="Example:\n  slim-callbacks run quickstart\n  slim-callbacks run --help",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    verbosity = _verbosity_parser()

    def command(name, **kwargs):  # a subcommand with the shared options and its example
        return commands.add_parser(
            name, parents=[verbosity], formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Example:\n" + "\n".join("  " + line for line in EXAMPLES[name]), **kwargs)

    def recipe_args(p, optional=True):
        if optional:
            p.add_argument("recipe", nargs="?", default=DEFAULT_RECIPE,
                           help="recipe YAML file or bundled name (default: quickstart)")
        else:
            p.add_argument("recipe", help="recipe YAML file or bundled name")
        p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                       help="override a recipe key, e.g. -o train.epochs=3 (repeatable; "
                            "values are YAML)")

    p = command("run", help="train, prune, evaluate; write summary.json")
    recipe_args(p)
    p.add_argument("--dry-run", action="store_true",
                   help="2 epochs x 2 steps on synthetic data; no dataset or weights needed")
    p.add_argument("--output-dir", help="where a run writes (default: the recipe's "
                                        "output_dir; a temporary directory for --dry-run)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output directory from its newest complete "
                        "checkpoint (without it, a non-empty run directory is refused)")
    p.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2),
                   help="Model.fit verbosity (default 2; --quiet: 0)")
    p.add_argument("--no-latency", action="store_true",
                   help="do not measure the inference latency of the original and pruned "
                        "models at the end (same as -o deploy.latency=false; the final model "
                        "is still exported to OUTPUT_DIR/inference)")

    p = command("export", help="export a run's pruned model for inference, verified "
                               "against the dygraph network")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT",
                   help="a run's output directory (holding recipe.yaml and checkpoints/), or "
                        "a checkpoint prefix such as output/quickstart/checkpoints/final")
    p.add_argument("--format", action="append", dest="formats", metavar="FORMAT",
                   help="paddle (model.json + model.pdiparams, the default) or onnx "
                        "(model.onnx; needs pip install \"slim_callbacks[onnx]\"); repeatable")
    p.add_argument("--out", help="the directory to write (default: inference/ beside the "
                                 "checkpoints directory, i.e. RUN_DIR/inference)")
    p.add_argument("--recipe", help="the run's recipe, for runs that did not store "
                                    "recipe.yaml")

    no_measure = ("answer from the latency cache only: strategy: latency and round_to: auto "
                  "measure on this machine (minutes on a first call) unless their timings are "
                  "cached")
    p = command("plan", help="the structure the recipe ends with, without training")
    recipe_args(p)
    p.add_argument("--no-measure", action="store_true",
                   help=no_measure + "; a missing timing is an error")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--explain", action="store_true",
                   help="list the channel groups the tracer blocks, with the op and layer "
                        "that block each and the MACs at stake, largest first")

    p = command("check", help="print the resolved recipe, or its errors")
    recipe_args(p)
    p.add_argument("--no-measure", action="store_true",
                   help=no_measure + "; without them the final ratios are not checked")

    p = command("sensitivity", help="write the sensitivities file of a recipe")
    recipe_args(p, optional=False)
    p.add_argument("--samples", type=int, help="evaluate on N samples of the eval data")
    p.add_argument("--workers", type=int, default=1,
                   help="processes evaluating layers side by side (default 1; up to the "
                        "number of cores, each adds about one core's speed)")
    p.add_argument("--output", help="the JSON file (default: the recipe's "
                                    "pruning.sensitivities, relative to the recipe file)")

    p = command("dashboard", help="compare runs: a table of their summaries, and "
                                  "VisualDL over all of them")
    p.add_argument("dirs", nargs="*", default=["output"], metavar="DIR",
                   help="directories holding runs (default: output)")
    p.add_argument("--host", default="127.0.0.1", help="VisualDL host (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8040, help="VisualDL port (default 8040)")
    p.add_argument("--no-serve", action="store_true", help="print the table, do not start VisualDL")

    p = command("latency", help="CPU latency of exported inference models, side by side")
    p.add_argument("models", nargs="+", metavar="MODEL_DIR_OR_PREFIX",
                   help="a directory holding model.json/model.pdiparams, or a model prefix")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--no-onednn", action="store_true", help="switch the oneDNN kernels off")
    p.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    p.add_argument("--keep-intermediates", action="store_true",
                   help="run the predictors with eager deletion off: every intermediate "
                        "tensor of a run is kept (faster on small models, more memory)")
    p.add_argument("--input-shape", type=int, nargs="+", metavar="DIM",
                   help="the input shape with batch, e.g. 1 3 224 224 (needed when the "
                        "model has unknown dims)")
    prune_model_args.add_arguments(command("prune-model", help="prune an exported inference model"))
    return parser


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time (so in-process callers and
    pytest's capture see the log lines)."""

    def emit(self, record):
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


@contextlib.contextmanager
def _command_logging(level: int):
    """Our log lines on stderr while a command runs; the ``slim_callbacks`` logger's
    handlers, level and propagation are restored afterwards (``main`` may be called
    in-process, by tests or by a user's own script)."""
    log = logging.getLogger("slim_callbacks")
    saved = (list(log.handlers), log.level, log.propagate)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(level)
    try:
        yield
    finally:
        log.handlers[:] = saved[0]
        log.setLevel(saved[1])
        log.propagate = saved[2]


def _out(text: str) -> None:
    print(text, flush=True)


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _silent(text: str) -> None:
    """What --quiet makes of progress lines."""


def _notes(args):
    """Where a command's progress notes go: stderr, or nowhere with --quiet."""
    return _silent if args.quiet else _note


def cmd_run(args) -> int:
    from slim_callbacks.app import runner
    from slim_callbacks.app.job import load_job
    if args.no_latency:
        args.override = [*args.override, "deploy.latency=false"]
    job = load_job(find_recipe(args.recipe), args.override)
    if args.dry_run:
        job = runner.dry_run_recipe(job, args.output_dir)
    elif args.output_dir:
        job = load_job(find_recipe(args.recipe), [*args.override,
                       f"output_dir={args.output_dir}",
                       f"logging.log_dir={os.path.join(args.output_dir, 'logs')}",
                       f"checkpoint.save_dir={os.path.join(args.output_dir, 'checkpoints')}"])
    if not args.quiet:
        runner.run(job, verbose=0 if args.dry_run else args.verbose, emit=_out, resume=args.resume)
        return 0
    from slim_callbacks.app.report import summary_table
    from slim_callbacks.core.paddle_utils import is_rank0
    with contextlib.redirect_stdout(io.StringIO()):  # Paddle's own prints (checkpoints saved)
        summary = runner.run(job, verbose=0, emit=_silent, resume=args.resume)
    if is_rank0():
        _out(summary_table(summary))
    return 0


def cmd_plan(args) -> int:
    from slim_callbacks.app import planning
    from slim_callbacks.app.job import load_job
    from slim_callbacks.app.report import plan_text
    job = load_job(find_recipe(args.recipe), args.override)
    if args.explain:
        return _explain(job, args)
    result = planning.plan(job, emit=_notes(args), measure=not args.no_measure)
    if args.json:
        out = {k: result[k] for k in ("before", "after", "flops_reduction", "layers")}
        _out(json.dumps(out, indent=1))
    else:
        _out(f"recipe {job.recipe.name}: {job.recipe.model.name} at input "
             f"{as_inputs(job.recipe.example_inputs).describe()}")
        _out(plan_text(result))
    return 0


def _explain(job, args) -> int:
    import dataclasses

    from slim_callbacks.analysis.explain import explain
    from slim_callbacks.app import planning
    report = explain(planning.planning_network(job, _notes(args)), job.recipe.example_inputs)
    if args.json:
        out = dataclasses.asdict(report)
        out["by_op"] = report.by_op()
        _out(json.dumps(out, indent=1))
    else:
        _out(f"recipe {job.recipe.name}: {job.recipe.model.name} at input "
             f"{as_inputs(job.recipe.example_inputs).describe()}")
        _out(report.table())
    return 0


def cmd_check(args) -> int:
    from slim_callbacks.app import planning
    from slim_callbacks.app.job import load_job
    job = load_job(find_recipe(args.recipe), args.override)
    planning.check(job, emit=_notes(args), measure=not args.no_measure)
    _out(job.recipe.to_yaml().rstrip())
    return 0


def cmd_sensitivity(args) -> int:
    from slim_callbacks.app.job import load_job
    from slim_callbacks.app.sensitivity_command import run_sensitivity
    job = load_job(find_recipe(args.recipe), args.override)
    if args.samples is not None:
        check_int("--samples", args.samples, 1, allowed="an int >= 1")
    check_int("--workers", args.workers, 1, allowed="an int >= 1")
    run_sensitivity(job, samples=args.samples, output=args.output, workers=args.workers,
                    emit=_silent if args.quiet else _out)
    return 0


def cmd_dashboard(args) -> int:
    from slim_callbacks.app.dashboard import serve
    if not 0 < args.port < 65536:
        raise SlimError(f"--port: {args.port!r} is not allowed; expected 1..65535")
    return serve(args.dirs, args.host, args.port, serve_board=not args.no_serve, emit=_out)


def cmd_export(args) -> int:
    from slim_callbacks.app.deployment import export_run
    export_run(args.source, args.formats or ["paddle"], out=args.out, recipe_file=args.recipe,
               emit=_out)
    return 0


def cmd_latency(args) -> int:
    from slim_callbacks.deploy.runtime import model_prefix
    from slim_callbacks.latency.measure import format_latency_table, measure_latency
    prefixes = {}
    for path in args.models:
        prefix = model_prefix(path)
        prefixes[path if path not in prefixes else f"{path}#{len(prefixes)}"] = prefix
    results = measure_latency(prefixes, threads=args.threads, onednn=not args.no_onednn,
                              rounds=args.rounds, input_shape=args.input_shape,
                              keep_intermediates=args.keep_intermediates)
    _out(format_latency_table(results))
    return 0


COMMANDS = {"run": cmd_run, "plan": cmd_plan, "check": cmd_check,
            "sensitivity": cmd_sensitivity, "dashboard": cmd_dashboard,
            "export": cmd_export, "latency": cmd_latency,
            "prune-model": prune_model_args.cmd_prune_model}


def _log_level(args) -> int:
    """-v: DEBUG; -q: WARNING; else INFO for run and sensitivity, WARNING for the rest."""
    if args.debug:
        return logging.DEBUG
    return logging.INFO if args.command in ("run", "sensitivity") and not args.quiet \
        else logging.WARNING


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error)."""
    args = build_parser().parse_args(None if argv is None else list(argv))
    try:
        with _command_logging(_log_level(args)), \
                contextlib.nullcontext() if args.debug else quiet_paddle():
            return COMMANDS[args.command](args)
    except SlimError as err:
        message = " ".join(str(err).split())  # one line, even for YAML parser errors
        print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
