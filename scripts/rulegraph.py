"""The README's rule graph: `snakemake --rulegraph mermaid-js` over docs/dag.yaml (every optional
stage on), written between the README's rulegraph markers (`make dag`), or checked (`--check`:
exit 1 naming the difference when the README's graph is stale)."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["demo/config.yaml", "demo/arms.yaml", "docs/dag.yaml"]
BEGIN, END = "<!-- rulegraph: begin (make dag) -->", "<!-- rulegraph: end -->"


def rulegraph() -> str:
    """The mermaid flowchart of the rules, without snakemake's colours (random per run)."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--rulegraph", "mermaid-js", "--configfile", *CONFIGS],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"snakemake --rulegraph failed:\n{proc.stderr[-3000:]}")
    lines = [line.strip() for line in proc.stdout.splitlines()]
    names = dict(re.findall(r"^(id\d+)\[(\w+)\]$", "\n".join(lines), re.M))
    # snakemake numbers the rules and orders the edges differently from run to run: name them, sorted
    edges = sorted(
        {f"{names[a]} --> {names[b]}" for a, b in re.findall(r"^(id\d+) --> (id\d+)$", "\n".join(lines), re.M)}
    )
    alone = sorted(set(names.values()) - {n for e in edges for n in e.split(" --> ")})
    return "\n".join(["```mermaid", "flowchart TB", *(f"    {line}" for line in edges + alone), "```"])


def with_graph(readme: str, graph: str) -> str:
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers")
    return pattern.sub(lambda _: f"{BEGIN}\n{graph}\n{END}", readme)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when the README's graph is stale")
    args = parser.parse_args(argv)
    path = REPO / "README.md"
    readme = path.read_text(encoding="utf-8")
    new = with_graph(readme, rulegraph())
    if args.check:
        if new != readme:
            print("README.md's rule graph is stale: run `make dag`", file=sys.stderr)
            return 1
        return 0
    path.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
