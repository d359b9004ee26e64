"""Every rule lists as `code` inputs exactly the project modules its script imports, directly or
through other project modules (lazy imports inside functions included), so that editing a module
re-runs the jobs that use it, and only those. The lists are computed (evalsel.core.imports, through
workflow/rules/common.smk's ``code_of``); these tests hold the rules to naming their own script and
the computation to what Python imports."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evalsel.core.imports import closure, closure_files, imported_modules

REPO = Path(__file__).resolve().parents[1]
RULES_DIR = REPO / "workflow" / "rules"


def _rules() -> dict[str, tuple[str, str]]:
    """``{rule: (code expression, script stem)}`` read from workflow/rules/*.smk."""
    out = {}
    for smk in sorted(RULES_DIR.glob("*.smk")):
        text = smk.read_text(encoding="utf-8")
        for block in re.split(r"\n(?=\s*(?:rule|checkpoint) \w+:)", text):
            m = re.match(r"\s*(?:rule|checkpoint) (\w+):", block)
            if not m:
                continue
            script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', block)
            code = re.search(r"\n\s+code=(.*?),\n", block)
            if script:
                out[m.group(1)] = (code.group(1) if code else "", script.group(1))
    return out


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
        "base_model_import",
    } <= set(RULES)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_each_rule_lists_the_modules_of_its_own_script(rule):
    expr, script = RULES[rule]
    assert expr in (f'code_of("{script}")', f'code_of("{script}", skip=EMBED_SKIP)'), f"{rule}: code={expr}"


def test_only_the_embedding_rules_skip_and_only_the_other_backend():
    skipping = {r for r, (expr, _) in RULES.items() if "skip=" in expr}
    assert skipping == {"benchmark_embed", "pool_embed"}
    text = (RULES_DIR / "embed.smk").read_text(encoding="utf-8")
    assert 'EMBED_SKIP = [] if EMBED_ZHIPU else ["evalsel.embed.zhipu"]' in text
    names = closure([REPO / "workflow" / "scripts" / "pool_embed.py"])
    assert "evalsel.embed.zhipu" in names  # so the skip names a module the script really imports


def test_the_closure_is_what_python_imports(tmp_path):
    """On a small package: parent packages, `from pkg import module`, lazy imports inside functions
    and chains are found; a name that is not a module, a third-party and a relative import are not."""
    src = tmp_path / "src"
    pkg = src / "evalsel"
    for rel, body in {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/io.py": "import json\n",
        "core/unused.py": "",
        "stage/__init__.py": "",
        "stage/a.py": "from evalsel.core.io import json\n",
        "stage/b.py": "def f():\n    from evalsel.stage import c\n    return c\n",
        "stage/c.py": "import evalsel.core.io\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(body, encoding="utf-8")
    script = tmp_path / "script.py"
    script.write_text("import numpy\nfrom evalsel.stage.a import json\nfrom evalsel.stage import b\n", encoding="utf-8")
    names = closure([script], src)
    assert names == {
        "evalsel",
        "evalsel.core",
        "evalsel.core.io",
        "evalsel.stage",
        "evalsel.stage.a",
        "evalsel.stage.b",
        "evalsel.stage.c",
    }
    assert imported_modules(pkg / "stage" / "a.py", src) == {"evalsel", "evalsel.core", "evalsel.core.io"}
    # a skipped module is not followed: nothing only it imports is listed
    assert "evalsel.stage.c" not in closure([script], src, skip=["evalsel.stage.b"])
    files = closure_files([script], src)
    assert files == sorted(files) and all(f.is_file() for f in files)
    # what Python really loads running the script agrees
    probe = (
        f"import sys; sys.path.insert(0, {str(src)!r}); "
        f"exec(open({str(script)!r}).read()); b.f(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'evalsel'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert eval(out) == sorted(names)  # noqa: S307 (our own probe's output)


@pytest.mark.parametrize("script", ["recall", "sft_build", "report", "pool_prepare"])
def test_every_module_a_script_loads_is_listed(script):
    """Importing a rule script's project imports loads no project module its code inputs leave out."""
    path = REPO / "workflow" / "scripts" / f"{script}.py"
    listed = closure([path])
    tree_imports = textwrap.dedent(
        "\n".join(
            line
            for line in path.read_text(encoding="utf-8").splitlines()
            if re.match(r"(from evalsel[\w.]* import .*|import evalsel[\w.]*)$", line)
        )
    )
    probe = (
        f"import sys; sys.path.insert(0, {str(REPO / 'src')!r}); "
        + tree_imports.replace("\n", "; ")
        + "; print(sorted(m for m in sys.modules if m.split('.')[0] == 'evalsel'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert set(eval(out)) <= listed  # noqa: S307 (our own probe's output)
