"""Snakemake script of rule `sft_summary`: contamination report, review file and statistics over every arm."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.sets.build import Context, summarize

with job_logging(snakemake):
    ctx = Context.of_job(snakemake.input, snakemake.params)
    files = list(snakemake.input.arms)
    summarize(
        ctx,
        arms={arm: tuple(files[3 * i : 3 * i + 3]) for i, arm in enumerate(snakemake.params.arms)},
        statistics_path=snakemake.output.statistics,
        contamination_path=snakemake.output.contamination,
        review_path=snakemake.output.review,
        longest_seed_n=snakemake.params.longest_seed_n,
        recall_splits=list(snakemake.params.recall_splits),
        eval_splits=list(snakemake.params.eval_splits),
        seed=snakemake.params.seed,
    )
