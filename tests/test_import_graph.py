"""The package's tree tells the method: one folder per stage, in the order data flows, and each
stage imports only ``core`` and the stages before it (lazy imports inside functions included).
Only the two entry points at the top, ``cli`` and ``config``, may import any stage."""

from __future__ import annotations

from pathlib import Path

import pytest

from evalsel.core.imports import imported_modules

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "evalsel"
# The order data flows in (README "Where things live"); demo builds the offline tiny models.
STAGES = ["core", "data", "embed", "guard", "select", "sets", "train", "evaluate", "rl", "report", "serve", "demo"]
TOP = {"__init__", "cli", "config"}


def _module(path: Path) -> str:
    rel = path.relative_to(next(p for p in path.parents if p.name == "src")).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


MODULES = sorted(PKG.rglob("*.py"))


def test_every_folder_is_a_stage_and_every_module_is_in_one():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(STAGES)
    loose = {p.stem for p in PKG.glob("*.py")}
    assert loose == TOP


def violations(path: Path, src: Path = SRC) -> list[str]:
    """The imports of one stage module that reach a later stage or an entry point."""
    own = _stage(_module(path))
    allowed = {"core", own} | set(STAGES[: STAGES.index(own)])
    return [
        f"{name} (stage {_stage(name) or name})"
        for name in sorted(imported_modules(path, src))
        if name != "evalsel" and _stage(name) not in allowed
    ]


@pytest.mark.parametrize("path", [p for p in MODULES if p.parent != PKG], ids=lambda p: _module(p))
def test_a_stage_imports_only_core_and_earlier_stages(path):
    assert violations(path) == [], f"{_module(path)} imports a later stage"


@pytest.mark.parametrize("folder", ["src/evalsel", "workflow/scripts"])
def test_no_function_is_over_100_lines(folder):
    """Long functions are split where a reader would cut them (ruff holds complexity and statements)."""
    import ast

    long = []
    for path in sorted((SRC.parent / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 100:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


def test_core_imports_no_stage():
    for path in (PKG / "core").glob("*.py"):
        assert all(_stage(n) in (None, "core") for n in imported_modules(path, SRC)), path.name


def test_the_check_fails_on_a_backward_import(tmp_path):
    """Sabotage: a data module importing selection is caught."""
    src = tmp_path / "src"
    for rel in (
        "evalsel/__init__.py",
        "evalsel/data/__init__.py",
        "evalsel/select/__init__.py",
        "evalsel/select/arms.py",
    ):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text("", encoding="utf-8")
    bad = src / "evalsel" / "data" / "pool.py"
    bad.write_text("def f():\n    from evalsel.select.arms import resolve\n", encoding="utf-8")
    assert violations(bad, src) == ["evalsel.select (stage select)", "evalsel.select.arms (stage select)"]
    bad.write_text("import evalsel.cli\n", encoding="utf-8")
    (src / "evalsel" / "cli.py").write_text("", encoding="utf-8")
    assert violations(bad, src) == ["evalsel.cli (stage evalsel.cli)"]
