"""Snakemake script of rule `benchmark_embed`: the recall-split questions of one subject embedded as queries."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.gpu import device_claim
from evalsel.core.io import job_logging
from evalsel.embed.encode import embed_benchmark, embed_settings

with job_logging(snakemake), device_claim(snakemake.params.device, snakemake.resources.gpu):
    params = dict(snakemake.params.items())
    embed_benchmark(
        snakemake.input.benchmark,
        out_npy=snakemake.output.npy,
        recall_splits=list(params.pop("recall_splits")),
        query_text=params.pop("query_text"),
        settings=embed_settings(threads=snakemake.threads, **params),
    )
