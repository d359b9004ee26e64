"""Snakemake script of rule `sft_build`: one selection arm's SFT set (its selection plus the random mix)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.sets.build import Context, build_arm

with job_logging(snakemake):
    ctx = Context.of_job(snakemake.input, snakemake.params)
    build_arm(
        ctx,
        name=snakemake.wildcards.arm,
        selection_files=list(snakemake.input.selected),
        selection_statistics=snakemake.input.selection_statistics,
        out_path=snakemake.output.sft,
        statistics_path=snakemake.output.statistics,
        drops_path=snakemake.output.drops,
        fmt=snakemake.params.format,
        random_mix_ratio=snakemake.params.random_mix_ratio,
        tokenizer=snakemake.params.tokenizer,
        seed=snakemake.params.seed,
    )
