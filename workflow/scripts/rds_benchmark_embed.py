"""Snakemake script of rule `rds_benchmark_embed`: RDS+ vectors of one subject's recall questions."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.gpu import device_claim
from evalsel.core.io import job_logging
from evalsel.embed.rds import RdsSettings, embed_benchmark_rds

with job_logging(snakemake), device_claim(snakemake.params.device, snakemake.resources.gpu):
    params = dict(snakemake.params.items())
    params["model"] = params["model"] or snakemake.input.model[0]  # the DAG's own model (demo)
    embed_benchmark_rds(
        snakemake.input.benchmark,
        out_npy=snakemake.output.npy,
        recall_splits=list(params.pop("recall_splits")),
        query_text=params.pop("query_text"),
        settings=RdsSettings(threads=snakemake.threads, **params),
    )
