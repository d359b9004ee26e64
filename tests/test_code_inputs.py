"""Every rule lists as `code` inputs exactly the project modules its script imports, directly or
through other project modules (lazy imports inside functions included), so that editing a module
re-runs the jobs that use it, and only those."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "evalsel"
ALWAYS = {"__init__.py", "io.py"}  # rules/common.smk's pkg() lists them for every rule


def _imports(path: Path) -> set[str]:
    """Project modules (file names) one file imports anywhere in it."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 or mod == "evalsel" or mod.startswith("evalsel."):
                base = mod.split(".", 1)[1] if mod.startswith("evalsel.") else ("" if mod == "evalsel" else mod)
                if base:
                    out.add(base.split(".")[0] + ".py")
                else:  # from . import x / from evalsel import x
                    out.update(a.name + ".py" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] + ".py" for a in node.names if a.name.startswith("evalsel."))
    return {m for m in out if (PKG / m).is_file()}


def closure(script: Path) -> set[str]:
    todo, seen = list(_imports(script)), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo.extend(_imports(PKG / m) - seen)
    return seen | ALWAYS


def _rules() -> dict[str, tuple[str, str]]:
    """``{rule: (code expression, script path)}`` read from rules/*.smk."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", text):
            m = re.match(r"(?:rule|checkpoint) (\w+):", block)
            if not m:
                continue
            script = re.search(r'script:\s*\n\s*"\.\./(workflow/scripts/[\w.]+)"', block)
            code = re.search(r"\n\s+code=(.*?),\n\s+(?:\w+=|output:|#)", block, re.S)
            if script:
                out[m.group(1)] = (code.group(1) if code else "[]", script.group(1))
    return out


def _listed(expr: str) -> set[str]:
    """The file names a rule's `code=` expression lists, every optional module included."""
    ns = {"pkg": lambda *m: [*sorted(ALWAYS), *m], "PKG": Path(""), "str": str, "EMBED_ZHIPU": True, "EMBED_ST": True}
    for smk in sorted((REPO / "rules").glob("*.smk")):  # the shared lists: EMBED_CODE, SFT_CODE, ...
        text = smk.read_text(encoding="utf-8")
        for name, code in re.findall(r"^([A-Z_]+_CODE) = (pkg\(.*?\n\))", text, re.S | re.M):
            ns[name] = eval(code, ns)  # noqa: S307 (our own rules file)
    return {Path(p).name for p in eval(expr, ns)}  # noqa: S307


RULES = _rules()


def test_every_scripted_rule_is_found():
    assert {
        "benchmark_fetch",
        "pool_prepare",
        "recall",
        "sft_build",
        "train",
        "evaluate",
        "report",
        "transfer_guard",
        "transfer_evaluate",
    } <= set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_code_inputs_equal_the_modules_the_script_imports(rule):
    expr, script = RULES[rule]
    listed, imported = _listed(expr), closure(REPO / script)
    assert listed == imported, f"{rule}: missing {sorted(imported - listed)}, not imported {sorted(listed - imported)}"
