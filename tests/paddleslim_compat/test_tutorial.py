"""A script written in the style of PaddleSlim's dygraph filter-pruning tutorial runs
with nothing changed but its import lines."""
import pathlib
import re

import pytest
from helpers import TESTS

SCRIPT = pathlib.Path(TESTS) / "paddleslim_tutorial.py"


@pytest.mark.slow  # 14 convs x 9 ratios of paddle.Model.evaluate: about 20 s
def test_the_tutorial_script_runs_with_only_the_imports_changed(tmp_path, monkeypatch):
    source = SCRIPT.read_text(encoding="utf-8")
    changed = re.sub(r"^from paddleslim\.", "from slim_callbacks.paddleslim.", source, flags=re.M)
    diff = [(a, b) for a, b in zip(source.splitlines(), changed.splitlines()) if a != b]
    assert len(diff) == 2 and all(a.startswith("from paddleslim.") for a, _ in diff)
    monkeypatch.chdir(tmp_path)
    scope = {"__name__": "__main__"}
    exec(compile(changed, str(SCRIPT), "exec"), scope)
    assert (tmp_path / "sen.pickle").read_text().lstrip().startswith("{")
    assert 0.3 < scope["plan"].pruned_flops < 0.5
    assert scope["pruned"] < scope["flops"]
    assert len(scope["pruner"].sensitive()) == 14  # conv1 and the 13 pointwise convs

