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

.PHONY: install demo demo-negative demo-positive demo-arms demo-positive-arms report test test-fast lint dag clean-demo

# The venv is only created when PYTHON is the venv's own interpreter.
$(VENV)/bin/python:
	$(PYTHON3) -m venv $(VENV)

# torch is pinned first so that pip takes the CPU wheel this kind of machine carries;
# on a GPU box install the torch build matching your CUDA first, then `make install`.
install: $(filter $(VENV)/bin/python,$(PYTHON))
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[all,dev,deepspeed]"

# Both controls: the negative one (demo/config.yaml: a random-weight model, no effect to find) in
# results/, and the positive one (demo/positive: facts to learn, an effect that must be found) in
# results/positive/, each with its own report.
demo: install demo-negative demo-positive

demo-negative:
	$(PYTHON) -m snakemake --cores $(CORES) --configfile demo/config.yaml --show-failed-logs

demo-positive:
	mkdir -p results/positive && cp config.yaml results/positive/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/positive --configfile config.yaml demo/positive/config.yaml --show-failed-logs

# The demo with four arms (demo/arms.yaml): cosine, RDS+, DSIR and random, compared head to head.
demo-arms: install
	$(PYTHON) -m snakemake --cores $(CORES) --configfile demo/config.yaml demo/arms.yaml --show-failed-logs

# The positive world with the same four arms (results/positive-arms; about 3 minutes here).
demo-positive-arms: install
	mkdir -p results/positive-arms && cp config.yaml results/positive-arms/config.yaml
	$(PYTHON) -m snakemake --cores $(CORES) --directory results/positive-arms --configfile config.yaml demo/positive/config.yaml demo/positive/arms.yaml --show-failed-logs

# Snakemake's own report of the demo run: results, plots and statistics with captions, the DAG,
# runtimes (open results/report.zip's report.html)
report:
	$(PYTHON) -m snakemake --configfile demo/config.yaml --report results/report.zip

test: install lint
	$(PYTHON) -m pytest -ra

test-fast:
	$(PYTHON) -m pytest -ra -m "not slow and not slurm"

lint:
	$(PYTHON) -m ruff check src tests workflow perf demo
	$(PYTHON) -m ruff format --check src tests workflow perf demo
	$(PYTHON) -m snakemake --lint --configfile demo/config.yaml
	$(PYTHON) -m snakemake --lint --configfile demo/config.yaml demo/arms.yaml
	$(PYTHON) -m snakefmt --check Snakefile rules/

dag:
	$(PYTHON) -m snakemake --configfile demo/config.yaml --rulegraph | dot -Tsvg > docs/rulegraph.svg

clean-demo:
	rm -rf results logs benchmarks/*/ .snakemake
