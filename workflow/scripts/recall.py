"""Snakemake script of rule `recall`: one arm's pool samples per benchmark question (cosine or RDS+ vectors)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.select.recall import run_recall

with job_logging(snakemake):
    run_recall(
        subjects=list(snakemake.params.subjects),
        query_vectors=list(snakemake.input.queries),
        benchmark_files=list(snakemake.input.benchmark),
        pool_vectors=list(snakemake.input.pool_vectors),
        pool_shards=list(snakemake.input.pool_shards),
        recall_outputs=list(snakemake.output.recalled),
        statistics_path=snakemake.output.statistics,
        histogram_path=snakemake.output.histogram,
        block_size=snakemake.params.block_size,
        leak_guard=dict(snakemake.params.leak_guard),
        backend=snakemake.params.backend,
        gpus=snakemake.resources.gpu,
        threads=snakemake.threads,
        **dict(snakemake.params.settings),
    )
