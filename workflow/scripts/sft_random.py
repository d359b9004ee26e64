"""Snakemake script of rule `sft_random`: a random arm sized like the arm it matches."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.sets.build import Context, build_random

with job_logging(snakemake):
    ctx = Context.of_job(snakemake.input, snakemake.params)
    build_random(
        ctx,
        name=snakemake.wildcards.arm,
        match_statistics=snakemake.input.match,
        out_path=snakemake.output.sft,
        statistics_path=snakemake.output.statistics,
        drops_path=snakemake.output.drops,
        fmt=snakemake.params.format,
        random_match=snakemake.params.random_match,
        tokenizer=snakemake.params.tokenizer,
        seed=snakemake.params.seed,
    )
