"""BENCHMARKS.md reads as results: no ticket numbers, commit ids, branch names or
clock times of a lab notebook; every section says what, how (the command) and when;
the summary's links lead to sections that exist."""
import os
import re

import pytest
from helpers import ROOT

NOTEBOOK = {
    "an issue number": r"#\d+\b|\bissues? #?\d+",
    "a commit id": r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b",
    "a branch name": r"\bon branch\b|\bbranch [\w./-]+\b|\bi\d+-[a-z]+\b",
    "a clock time": r"\b\d{1,2}:\d{2}\b(?:[-\d:]*)\s*UTC",
}


def read(name="BENCHMARKS.md"):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return f.read()


def slug(heading):
    """The anchor GitHub (and MkDocs) give a heading."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s", "-", text)


def sections(text):
    """{title: body} of the ``## `` sections."""
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


@pytest.mark.parametrize("what", sorted(NOTEBOOK))
def test_no_lab_notebook_references(what):
    found = [m.group(0) for m in re.finditer(NOTEBOOK[what], read(), flags=re.I)]
    assert found == [], f"BENCHMARKS.md holds {what}: {found}"


@pytest.mark.parametrize("what, text", [
    ("an issue number", "as issue #99 asked"), ("an issue number", "(#99, item 3)"),
    ("a commit id", "at commit 0abc123"), ("a branch name", "on branch i99-example"),
    ("a clock time", "14:48 UTC"), ("a clock time", "17:16-17:37 UTC")])
def test_the_patterns_catch_what_they_are_for(what, text):
    assert re.search(NOTEBOOK[what], text, flags=re.I)


def test_every_result_section_says_what_how_and_when():
    found = sections(read())
    assert len(found) >= 10
    for title, body in found.items():
        if title in ("How to read these numbers", "Summary"):
            continue
        assert "Command" in body and "Date" in body, title


def test_the_summary_links_lead_to_sections():
    text = read()
    anchors = {slug(h) for h in re.findall(r"^#{2,3} (.+)$", text, flags=re.M)}
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert len(links) >= 10
    assert [link for link in links if link not in anchors] == []
    assert [link for link in links if "--" in link] == []   # MkDocs' anchors merge hyphens
