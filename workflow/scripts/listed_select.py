"""Snakemake script of rule `listed_select`: a listed arm's selection (the pool ids a file names)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.select.listed import listed_job

with job_logging(snakemake):
    listed_job(
        ids_path=snakemake.input.ids,
        pool_shards=list(snakemake.input.pool_shards),
        selected_path=snakemake.output.selected,
        statistics_path=snakemake.output.statistics,
    )
