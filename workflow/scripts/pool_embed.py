"""Snakemake script of rule `pool_embed`: one pool shard embedded as passages."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.gpu import device_claim
from evalsel.core.io import job_logging
from evalsel.embed.encode import embed_pool_shard, embed_settings

with job_logging(snakemake), device_claim(snakemake.params.device, snakemake.resources.gpu):
    embed_pool_shard(
        snakemake.input.shard,
        out_npy=snakemake.output.npy,
        stats_path=snakemake.output.stats,
        settings=embed_settings(threads=snakemake.threads, **dict(snakemake.params.items())),
    )
