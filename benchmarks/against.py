"""Run a benchmark's worker on this checkout and on another git ref, interleaved.

A benchmark that supports ``--against REF`` calls :func:`compare`: the ref is checked
out once into a temporary git worktree, then ``rounds`` times the worker runs in a fresh
process on each tree, in ABBA order (this tree, the ref, the ref, this tree, ...), so
both see the same machine load. Each worker prints one JSON object of seconds (or any
numbers) on its last stdout line; :func:`compare` returns, per key, the median over
rounds for each tree and the ratio this/ref (below 1: this tree is faster).

    python benchmarks/bench_engine.py --against main~1 --processes 4
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence

ROOT = Path(__file__).resolve().parent.parent


def add_options(parser: argparse.ArgumentParser, processes: int) -> None:
    """``--against REF``, ``--processes N`` (per tree) and the hidden ``--worker``."""
    parser.add_argument("--against", metavar="REF", help="also measure this git ref, interleaved")
    parser.add_argument("--processes", type=int, default=processes,
                        help="fresh processes per tree with --against")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)


def _worktree(ref: str, where: str) -> Path:
    path = Path(where) / "ref"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(path), ref],
                   check=True)
    return path


def _run(tree: Path, script: str, args: Sequence[str]) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--worker", *args],
                          cwd=str(tree), env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed in {tree}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(ref: str, script: str, args: Sequence[str], rounds: int) -> Dict[str, dict]:
    """``{key: {"this": median, "ref": median, "ratio": this / ref}}`` over ``rounds``."""
    runs: Dict[str, List[Dict[str, float]]] = {"this": [], "ref": []}
    with tempfile.TemporaryDirectory() as where:
        trees = {"this": ROOT, "ref": _worktree(ref, where)}
        try:
            for i in range(rounds):
                order = ("this", "ref") if i % 2 == 0 else ("ref", "this")
                for name in order:
                    runs[name].append(_run(trees[name], script, args))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(trees["ref"])], check=False)
    out = {}
    for key in runs["this"][0]:
        this = statistics.median(r[key] for r in runs["this"])
        other = statistics.median(r[key] for r in runs["ref"])
        out[key] = {"this": this, "ref": other, "ratio": this / other if other else float("nan")}
    return out


def print_table(ref: str, results: Dict[str, dict], unit: str = "s") -> None:
    """A Markdown table: key, this tree, the ref, ratio."""
    print(f"| step | this ({unit}) | {ref} ({unit}) | this / {ref} |\n|---|---|---|---|")
    for key, r in results.items():
        print(f"| {key} | {r['this']:.3f} | {r['ref']:.3f} | {r['ratio']:.3f} |")
