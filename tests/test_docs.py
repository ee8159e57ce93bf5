"""The documentation builds, its Python examples run, and the README stays short.

Examples: every fenced ``python`` block of README.md and of each page under docs/ runs,
in page order, one namespace per page, in a temporary working directory, so a page's
later blocks may use what its earlier ones defined. A block preceded (on the line
before its fence) by ``<!-- no-run: reason -->`` is not run; use it only for what
cannot run here (ImageNet, pretrained weights, several processes) and say why.
Registries an example adds to (criteria, layer kinds, ops, models) are put back after
each page.
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md"] + sorted(DOCS.rglob("*.md"))
FENCE = re.compile(r"(?:<!-- no-run: (?P<reason>[^>]*?) -->\n)?^```python\n(?P<code>.*?)^```",
                   re.S | re.M)
MAX_README_LINES = 150


def python_blocks(page: pathlib.Path):
    """``(line, code, no-run reason or None)`` of each python block of ``page``."""
    text = page.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
            for m in FENCE.finditer(text)]


@pytest.fixture
def registries():
    """Puts back every registry a docs example may add to."""
    from slim_callbacks.app import builders
    from slim_callbacks.engine import criteria
    from slim_callbacks.program import converters
    from slim_callbacks.tracing import kinds, op_rules
    saved = (dict(criteria.CRITERIA), list(kinds._REGISTERED), dict(op_rules.REGISTERED_OPS),
             dict(builders.MODELS), dict(converters.CONVERTERS))
    yield
    for live, kept in zip((criteria.CRITERIA, kinds._REGISTERED, op_rules.REGISTERED_OPS,
                           builders.MODELS, converters.CONVERTERS), saved):
        live.clear()
        live.update(kept) if isinstance(live, dict) else live.extend(kept)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


def test_no_run_markers_give_a_reason():
    marked = [(page.name, line) for page in PAGES for line, _, reason in python_blocks(page)
              if reason is not None and not reason.strip()]
    assert not marked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page, tmp_path, monkeypatch, registries):
    blocks = [(line, code) for line, code, reason in python_blocks(page) if reason is None]
    if not blocks:
        pytest.skip(f"{page.name} has no python example to run")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, code in blocks:
        # pad so a traceback's line number is the page's line number
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


def test_mkdocs_build_strict(tmp_path):
    """The site builds with no warning (``--quiet`` would hide them from ``--strict``)."""
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{module} is not installed: pip install '.[docs]'")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict",
                           "-f", str(ROOT / "mkdocs.yml"), "-d", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert not warnings, "\n".join(warnings)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "callbacks" / "index.html").exists()
    # a doctest outside an ``Examples:`` section is read as Markdown: ">>>" nested quotes
    quoted = [str(page.relative_to(tmp_path)) for page in (tmp_path / "site").rglob("*.html")
              if re.search(r"<blockquote>\s*<blockquote>", page.read_text(encoding="utf-8"))]
    assert not quoted, f"doctests outside an Examples: section on {quoted}"
