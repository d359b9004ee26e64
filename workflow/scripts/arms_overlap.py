"""Snakemake script of rule `arms_overlap`: Jaccard overlap of the arms' SFT sets and their similarity to the benchmark."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.sets.overlap import arms_overlap

with job_logging(snakemake):
    arms_overlap(
        sft_files=dict(zip(snakemake.params.arms, snakemake.input.sft)),
        benchmark_files=list(snakemake.input.benchmark),
        recall_splits=list(snakemake.params.recall_splits),
        query_text=snakemake.params.query_text,
        json_path=snakemake.output.json,
        png_path=snakemake.output.png,
    )
