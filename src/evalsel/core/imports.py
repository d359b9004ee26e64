"""The project modules a file imports, directly or through other project modules, lazy imports inside
functions included. Two users: each rule's ``code`` inputs (``rules/common.smk``'s ``code_of``), so
that editing a module re-runs exactly the jobs that use it, and the import-graph test, which holds
every stage package to importing only ``core`` and earlier stages.

Only absolute imports are followed (ruff's TID252 refuses relative ones in this project).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterable
from pathlib import Path

SRC = Path(__file__).resolve().parents[2]  # the folder holding the evalsel package
PACKAGE = "evalsel"


def module_file(name: str, src: Path = SRC) -> Path | None:
    """The file of the dotted module ``name`` under ``src`` (a package's ``__init__.py``), or None."""
    base = src.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, src: Path = SRC) -> set[str]:
    """Dotted names of the project modules one file imports anywhere in it, with their parent
    packages (importing ``evalsel.guard.leak`` runs ``evalsel/__init__.py`` and
    ``evalsel/guard/__init__.py`` too)."""
    return set(_imported_modules(Path(path).read_text(encoding="utf-8"), str(path), str(src)))


@functools.cache
def _imported_modules(text: str, path: str, src_dir: str) -> frozenset[str]:
    """:func:`imported_modules` of a file's text, parsed once per text and process: the rules'
    code inputs share most modules, and the workflow computes them at every start."""
    src = Path(src_dir)
    tree = ast.parse(text, filename=path)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != PACKAGE:
                continue
            names.add(node.module)
            # `from evalsel.guard import leak` names a module; `... import check_text` does not
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if module_file(f"{node.module}.{alias.name}", src) is not None
            )
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
    out: set[str] = set()
    for name in names:
        parts = name.split(".")
        out.update(".".join(parts[: i + 1]) for i in range(len(parts)))
    return frozenset(n for n in out if module_file(n, src) is not None)


def closure(paths: Iterable[Path], src: Path = SRC, skip: Iterable[str] = ()) -> set[str]:
    """Every project module the files import, followed through the modules they import; the
    modules named in ``skip`` are neither listed nor followed."""
    todo = set().union(*(imported_modules(p, src) for p in paths))
    seen: set[str] = set(skip)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo |= imported_modules(module_file(name, src), src) - seen
    return seen - set(skip)


def closure_files(paths: Iterable[Path], src: Path = SRC, skip: Iterable[str] = ()) -> list[Path]:
    """The files of :func:`closure`, sorted, without the modules named in ``skip`` (a backend's
    module the configured job never imports: editing it then re-runs nothing)."""
    return sorted(module_file(n, src) for n in closure(paths, src, skip))
