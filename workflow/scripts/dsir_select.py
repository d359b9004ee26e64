"""Snakemake script of rule `dsir_select`: one DSIR arm's selection (hashed n-gram importance resampling)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.select.dsir import dsir_job

with job_logging(snakemake):
    dsir_job(
        benchmark_files=list(snakemake.input.benchmark),
        pool_shards=list(snakemake.input.pool_shards),
        selected_path=snakemake.output.selected,
        statistics_path=snakemake.output.statistics,
        histogram_path=snakemake.output.histogram,
        budget=snakemake.params.budget,
        recall_splits=list(snakemake.params.recall_splits),
        query_text=snakemake.params.query_text,
        settings=dict(snakemake.params.settings),
        leak_guard=dict(snakemake.params.leak_guard),
        seed=snakemake.params.seed,
    )
