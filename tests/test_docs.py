"""The documentation a newcomer reads first stays true: the README's rule graph is the workflow's
(redrawn by `make dag`), the README keeps its sections and its length, and every relative link in
the README, docs/ and config/README.md reaches a file and, where it names one, a heading."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = [README, REPO / "config" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SECTIONS = [
    "Quick start",
    "What it has shown",
    "How it works",
    "Where things live",
    "Configuration",
    "How to add a benchmark",
    "How to add a pool",
    "How to add a selection strategy",
    "Tests",
]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(h) for h in re.findall(r"^#+ (.*)$", text, re.M)}


def test_the_readme_rule_graph_is_current():
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "rulegraph.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    graph = README.read_text(encoding="utf-8")
    for rule in (
        "recall",
        "sft_build",
        "train",
        "evaluate",
        "report",
        "dsir_select",
        "rl_train",
        "dpo_train",
        "crosscheck",
    ):
        assert f" {rule}\n" in graph or f"{rule} -->" in graph or f"--> {rule}\n" in graph, rule


def test_a_stale_graph_is_caught(monkeypatch, capsys):
    """Sabotage: a workflow whose graph lost a rule fails the check, and --check writes nothing."""
    sys.path.insert(0, str(REPO / "scripts"))
    import rulegraph

    before = README.read_bytes()
    monkeypatch.setattr(rulegraph, "rulegraph", lambda: "```mermaid\nflowchart TB\n    recall --> all\n```")
    assert rulegraph.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().err
    assert README.read_bytes() == before


def test_the_readme_has_its_sections_in_order_and_stays_short():
    text = README.read_text(encoding="utf-8")
    heads = re.findall(r"^## (.*)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)
    assert [h for h in heads if h in SECTIONS] == SECTIONS, heads
    assert len(text.splitlines()) <= 300


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_reach_their_file_and_heading(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: link to {target}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path), f"{doc.name}: link to {target}: no such heading"
