"""Compare runs: a table of every run's before/after numbers, and VisualDL over all of them.

``slim-callbacks run`` leaves each run in ``output/<name>/``: ``summary.json`` (accuracy,
MACs, params and size before and after) and VisualDL records under ``logs/``. Given
one or more directories, :func:`find_runs` collects the runs below them,
:func:`comparison_table` lines them up, and :func:`serve` starts VisualDL on every
record directory at once, so the same tag (``eval/acc_top1``, ``model/gflops``,
``widths/<layer>`` ...) of all runs shares one chart.

    >>> import json, os, tempfile
    >>> root = tempfile.mkdtemp()
    >>> os.makedirs(os.path.join(root, "a"))
    >>> summary = {"recipe": "a", "flops_reduction": 0.5, "wall_time_s": 9.0,
    ...            "before": {"acc": 0.9, "macs": 200, "params": 10, "size_mb": 1.0},
    ...            "after": {"acc": 0.8, "macs": 100, "params": 6, "size_mb": 0.6}}
    >>> json.dump(summary, open(os.path.join(root, "a", "summary.json"), "w"))
    >>> [run.name for run in find_runs([root])]
    ['a']
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from typing import Callable, List, Optional, Sequence

from slim_callbacks.errors import SlimError

RECORD_PREFIX = "vdlrecords."
SUMMARY = "summary.json"
VISUALDL_MAIN = "import sys; from visualdl.server.app import main; sys.argv[0] = 'visualdl'; sys.exit(main())"


@dataclasses.dataclass
class Run:
    """One run: its name (path relative to the root it was found under), its
    ``summary.json`` contents if it has one, and its VisualDL record directories."""

    name: str
    path: str
    summary: Optional[dict] = None
    record_dirs: List[str] = dataclasses.field(default_factory=list)


def _has_records(files: Sequence[str]) -> bool:
    return any(f.startswith(RECORD_PREFIX) for f in files)


def _read_summary(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) and "before" in data and "after" in data else None
    except (OSError, ValueError):
        return None


def find_runs(roots: Sequence[str]) -> List[Run]:
    """Runs below ``roots``: every directory with a ``summary.json`` (a recipe run),
    with the VisualDL record directories inside it, plus record directories that belong
    to no such run (a script's ``PruneCallback(log_dir=...)``). Sorted by name.

    Raises:
        SlimError: a root that is not a directory.
    """
    runs: List[Run] = []
    for root in roots:
        if not os.path.isdir(root):
            raise SlimError(f"{root} is not a directory (give the output directory of your "
                            f"runs, e.g. output)")
        found = {}
        loose = []
        for directory, _, files in sorted(os.walk(root)):
            if SUMMARY in files:
                summary = _read_summary(os.path.join(directory, SUMMARY))
                if summary is not None:
                    found[directory] = Run(_name(root, directory), directory, summary)
            if _has_records(files):
                loose.append(directory)
        for directory in loose:
            owner = _owner(directory, found)
            if owner is not None:
                found[owner].record_dirs.append(directory)
            else:
                found[directory] = Run(_name(root, directory), directory, None, [directory])
        runs.extend(found.values())
    return sorted(runs, key=lambda run: run.name)


def _name(root: str, directory: str) -> str:
    relative = os.path.relpath(directory, root)
    return os.path.basename(os.path.abspath(root)) if relative == "." else relative


def _owner(directory: str, runs: dict) -> Optional[str]:
    """The deepest run directory that contains ``directory``."""
    candidates = [path for path in runs
                  if os.path.commonpath([os.path.abspath(path), os.path.abspath(directory)])
                  == os.path.abspath(path)]
    return max(candidates, key=len) if candidates else None


def comparison_table(runs: Sequence[Run]) -> str:
    """A Markdown table, one row per run with a summary: top-1 before -> after, MACs
    reduction, GMACs, params and size after, wall time."""
    header = ("run", "top-1 before", "top-1 after", "MACs -%", "GMACs", "params", "MB", "time s")
    rows = []
    for run in runs:
        if run.summary is None:
            continue
        before, after = run.summary["before"], run.summary["after"]
        rows.append((run.name, f"{before.get('acc', float('nan')):.4f}",
                     f"{after.get('acc', float('nan')):.4f}",
                     f"{100 * run.summary.get('flops_reduction', 0.0):.2f}",
                     f"{after.get('macs', 0) / 1e9:.4f}", f"{after.get('params', 0):,}",
                     f"{after.get('size_mb', 0.0):.2f}", f"{run.summary.get('wall_time_s', 0)}"))
    if not rows:
        return "(no run has a summary.json yet)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def visualdl_command(roots: Sequence[str], host: str, port: int) -> List[str]:
    """The VisualDL server command over ``roots`` (runs are named by their path below
    each root), in English, without telemetry (machines may be offline)."""
    return [sys.executable, "-c", VISUALDL_MAIN, "--logdir", *roots, "--host", host,
            "--port", str(port), "--language", "en", "--disable-telemetry"]


def serve(roots: Sequence[str], host: str = "127.0.0.1", port: int = 8040, *,
          serve_board: bool = True, emit: Callable[[str], None] = print) -> int:
    """Prints the comparison table of the runs under ``roots``, then (``serve_board``)
    runs VisualDL on them until interrupted. Returns VisualDL's exit code (0 after
    Ctrl-C).

    Raises:
        SlimError: a root that is not a directory, or no runs under them.
    """
    runs = find_runs(roots)
    if not runs:
        raise SlimError(f"no runs under {', '.join(roots)}: `slim-callbacks run RECIPE` writes "
                        f"output/<name>/summary.json and VisualDL logs there")
    emit(comparison_table(runs))
    with_records = [run.name for run in runs if run.record_dirs]
    emit(f"{len(runs)} runs, {len(with_records)} with VisualDL records")
    if not serve_board:
        return 0
    if not with_records:
        raise SlimError(f"no VisualDL records under {', '.join(roots)} (recipes write them "
                        f"unless logging.visualdl is false)")
    emit(f"VisualDL: http://{host}:{port} (Ctrl-C stops it)")
    try:
        return subprocess.run(visualdl_command(roots, host, port)).returncode
    except KeyboardInterrupt:
        return 0
