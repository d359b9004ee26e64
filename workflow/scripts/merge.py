"""Snakemake script of rule `merge`: an arm's adapter merged into the base model, saved standalone."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.train.merge import merge_adapter

base = list(snakemake.input.base)  # the tiny demo model when the DAG builds it
base_model = base[0] if base else snakemake.params.hub_base_model
with job_logging(snakemake):
    merge_adapter(base_model, snakemake.input.adapter, snakemake.output[0])
