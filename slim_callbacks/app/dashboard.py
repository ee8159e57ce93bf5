"""Compare runs: a table of every run's before/after numbers, and VisualDL over all of them.

``slim-callbacks run`` leaves each run in ``output/<name>/``: ``summary.json`` (accuracy,
MACs, params, size and inference latency before and after) and VisualDL records under
``logs/`` (``logs/train``, ``train-2``... for resumed sessions, and ``logs/latency``:
one directory per writer, as VisualDL shows one record file per directory). Given
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
import errno
import json
import logging
import os
import reprlib
import signal
import socket
import subprocess
import sys
from typing import Callable, List, Optional, Sequence

from slim_callbacks.core.checks import is_real
from slim_callbacks.core.errors import SlimError
from slim_callbacks.core.signals import handled

RECORD_PREFIX = "vdlrecords."
SUMMARY = "summary.json"
# VisualDL's main, exiting as soon as its server stops: after a failed bind (werkzeug's
# sys.exit(1)) VisualDL's non-daemon "wait until live" thread would keep it alive forever.
VISUALDL_MAIN = """\
import os, sys, traceback
from visualdl.server.app import main
sys.argv[0] = "visualdl"
try:
    main()
    code = 0
except SystemExit as stop:
    code = stop.code if isinstance(stop.code, int) else 1
except BaseException:
    traceback.print_exc()
    code = 1
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STOP_TIMEOUT_S = 10  # after SIGTERM, how long VisualDL gets to exit before SIGKILL
# The numbers the comparison table shows: top-level keys, and keys of "before"/"after".
TABLE_NUMBERS = {None: ("flops_reduction", "wall_time_s"), "before": ("acc",),
                 "after": ("acc", "macs", "params", "size_mb")}

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Run:
    """One run: its name (path relative to the root it was found under), its
    ``summary.json`` contents if it has one, and its VisualDL record directories."""

    name: str
    path: str
    summary: Optional[dict] = None
    record_dirs: List[str] = dataclasses.field(default_factory=list)


def _has_records(directory: str, files: Sequence[str]) -> bool:
    """True if ``files`` (of ``directory``) hold VisualDL records; warns when they hold
    several, as VisualDL shows only the newest record file of a directory."""
    records = sorted(f for f in files if f.startswith(RECORD_PREFIX))
    if len(records) > 1:
        log.warning("%s: VisualDL shows only %s, the newest of its %d record files; the "
                    "others (%s) are hidden: move each into a directory of its own to see it",
                    directory, records[-1], len(records), reprlib.repr(records[:-1]))
    return bool(records)


def _read_summary(path: str) -> Optional[dict]:
    """The run summary in ``path``; None, with a warning naming the file and what is
    wrong, if it is not valid JSON or not a mapping with "before" and "after" mappings.
    A value the table shows that is not a number is dropped with a warning (its cell
    stays blank)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        log.warning("%s: skipped, not readable as JSON (%s)", path, err)
        return None
    problem = _not_a_summary(data)
    if problem:
        log.warning("%s: skipped, %s", path, problem)
        return None
    for section, keys in TABLE_NUMBERS.items():
        mapping = data if section is None else data[section]
        for key in keys:
            if key in mapping and not is_real(mapping[key]):
                name = key if section is None else f"{section}.{key}"
                log.warning("%s: %s is %s, not a number; its cell is left blank", path, name,
                            reprlib.repr(mapping.pop(key)))
    return data


def _not_a_summary(data) -> Optional[str]:
    """What keeps ``data`` from being a run summary, or None."""
    if not isinstance(data, dict):
        return f"expected a mapping with 'before' and 'after', got a {type(data).__name__}"
    for side in ("before", "after"):
        if side not in data:
            return f"no '{side}' key (a run summary has 'before' and 'after')"
        if not isinstance(data[side], dict):
            return f"'{side}' is a {type(data[side]).__name__}, expected a mapping"
    return None


def find_runs(roots: Sequence[str]) -> List[Run]:
    """Runs below ``roots``: every directory with a ``summary.json`` (a recipe run),
    with the VisualDL record directories inside it, plus record directories that belong
    to no such run (a script's ``VisualDLLogger``). Sorted by name.

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
            if _has_records(directory, files):
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
    reduction, GMACs, params and size after, batch-1 latency after (Paddle Inference,
    1 thread; "(keep)" when measured with eager deletion off) and its speedup over the
    original, for ``strategy: latency`` the latency
    reduction it predicted and the one measured at the end of the run, wall time
    (blank where a summary lacks the number).

    >>> s = {"before": {}, "after": {}, "latency_strategy": {"predicted_reduction": 0.501,
    ...      "measured_reduction": 0.483, "target_reduction": 0.5}}
    >>> comparison_table([Run("lat", "", s)]).splitlines()[-1]
    '| lat |  |  |  |  |  |  |  |  | 50.1 | 48.3 |  |'
    """
    header = ("run", "top-1 before", "top-1 after", "MACs -%", "GMACs", "params", "MB",
              "ms 1 thread", "speedup", "latency -% predicted", "latency -% measured", "time s")
    rows = []
    for run in runs:
        if run.summary is None:
            continue
        before, after = run.summary["before"], run.summary["after"]
        latency = _latency(run.summary, "1_thread")
        strategy = _numbers(run.summary.get("latency_strategy"))
        rows.append((run.name, _cell(before, "acc", ".4f"), _cell(after, "acc", ".4f"),
                     _cell(run.summary, "flops_reduction", ".2f", scale=100),
                     _cell(after, "macs", ".4f", scale=1e-9), _cell(after, "params", ","),
                     _cell(after, "size_mb", ".2f"), _latency_ms(run.summary, latency),
                     _cell(latency, "speedup", ".2f"),
                     _cell(strategy, "predicted_reduction", ".1f", scale=100),
                     _cell(strategy, "measured_reduction", ".1f", scale=100),
                     _cell(run.summary, "wall_time_s", "")))
    if not rows:
        return "(no run has a summary.json yet)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _latency_ms(summary: dict, latency: dict) -> str:
    """The 1-thread ms after, marked ``(keep)`` when measured with eager deletion off.

    >>> _latency_ms({"latency": {"keep_intermediates": True}}, {"after_ms": 4.79})
    '4.790 (keep)'
    """
    cell = _cell(latency, "after_ms", ".3f")
    keep = isinstance(summary.get("latency"), dict) and summary["latency"].get("keep_intermediates")
    return cell + " (keep)" if cell and keep is True else cell


def _latency(summary: dict, setting: str) -> dict:
    """The numbers of one latency setting of a summary (``{}`` if absent or malformed)."""
    entry = (summary.get("latency") or {}).get(setting) if isinstance(
        summary.get("latency"), dict) else None
    return _numbers(entry)


def _numbers(entry) -> dict:
    """The numeric values of a summary entry (``{}`` if it is not a mapping)."""
    if not isinstance(entry, dict):
        return {}
    return {k: v for k, v in entry.items() if is_real(v)}


def _cell(mapping: dict, key: str, spec: str, scale: float = 1) -> str:
    """``mapping[key] * scale`` formatted with ``spec``; blank if the key is missing."""
    return format(mapping[key] * scale, spec) if key in mapping else ""


def visualdl_command(roots: Sequence[str], host: str, port: int) -> List[str]:
    """The VisualDL server command over ``roots`` (runs are named by their path below
    each root), in English, without telemetry (machines may be offline)."""
    return [sys.executable, "-c", VISUALDL_MAIN, "--logdir", *roots, "--host", host,
            "--port", str(port), "--language", "en", "--disable-telemetry"]


def serve(roots: Sequence[str], host: str = "127.0.0.1", port: int = 8040, *,
          serve_board: bool = True, emit: Callable[[str], None] = print) -> int:
    """Prints the comparison table of the runs under ``roots``, then (``serve_board``)
    runs VisualDL on them until Ctrl-C, SIGTERM or SIGHUP, which stop VisualDL too.
    Returns 0.

    Raises:
        SlimError: a root that is not a directory, no runs under them, ``host:port``
            taken (checked before VisualDL starts), or VisualDL failing on its own.
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
    check_port(host, port)
    emit(f"VisualDL: http://{host}:{port} (Ctrl-C stops it)")
    return _serve_until_stopped(visualdl_command(roots, host, port))


def check_port(host: str, port: int) -> None:
    """Binds ``host:port`` as VisualDL's server (werkzeug) will, and lets it go at once.

    SO_REUSEADDR is on, as in werkzeug: without it, connections of a dashboard stopped
    a minute ago (TIME_WAIT) would count as "in use"; a listening or plainly bound
    socket still does.

    Raises:
        SlimError: the port is taken or not allowed, or ``host`` is no address here.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno in (errno.EADDRINUSE, errno.EACCES):
            raise SlimError(f"--port: cannot listen on {host}:{port} ({reason}); choose "
                            f"another port with --port N") from None
        raise SlimError(f"--host: cannot listen on {host}:{port} ({reason}); expected an "
                        f"address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None


class _Stop(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) received while VisualDL runs."""


def _raise_stop(signum, frame):
    raise _Stop(signum)


def _signals(handler):
    """Every signal of ``STOP_SIGNALS`` handled by ``handler`` inside the block (see
    :func:`slim_callbacks.core.signals.handled`)."""
    return handled(handler, STOP_SIGNALS)


def _serve_until_stopped(command: List[str]) -> int:
    """Runs the VisualDL ``command`` in its own process group until Ctrl-C, SIGTERM or
    SIGHUP, which stop it (and wait for it) and return 0.

    Raises:
        SlimError: VisualDL exited by itself with a non-zero status (its message, e.g.
            "Address already in use", is on stderr above).
    """
    with _signals(_raise_stop):
        server = None
        try:
            server = subprocess.Popen(command, start_new_session=True)
            status = server.wait()
        except _Stop:
            return 0
        finally:
            if server is not None:
                with _signals(signal.SIG_IGN):  # a second Ctrl-C must not leave it running
                    _stop(server)
    if status != 0:
        raise SlimError(f"VisualDL exited with status {status} (its message is above)")
    return 0


def _stop(server: subprocess.Popen) -> None:
    """Stops the process group of ``server``: SIGTERM, SIGKILL if it is still running
    after ``STOP_TIMEOUT_S``."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
