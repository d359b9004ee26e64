"""Snakemake script of rule `rds_pool_embed`: RDS+ vectors of one pool shard (the base model's hidden states)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.gpu import device_claim
from evalsel.core.io import job_logging
from evalsel.embed.rds import RdsSettings, embed_pool_shard_rds

with job_logging(snakemake), device_claim(snakemake.params.device, snakemake.resources.gpu):
    embed_pool_shard_rds(
        snakemake.input.shard,
        out_npy=snakemake.output.npy,
        stats_path=snakemake.output.stats,
        settings=RdsSettings(
            threads=snakemake.threads,
            **{**dict(snakemake.params.items()), "model": snakemake.params.model or snakemake.input.model[0]},
        ),
    )
