"""Snakemake script of checkpoint `pool_prepare`: normalise, deduplicate and shard one pool source."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.data.pool import run_pool_prepare

with job_logging(snakemake):
    run_pool_prepare(
        snakemake.output[0],
        snakemake.wildcards.source,
        path=snakemake.params.path,
        hf_name=snakemake.params.hf_name,
        hf_config=snakemake.params.hf_config,
        hf_data_files=snakemake.params.hf_data_files,
        split=snakemake.params.split,
        fmt=snakemake.params.format,
        medical=snakemake.params.medical,
        max_samples=snakemake.params.max_samples,
        shard_size=snakemake.params.shard_size,
        embed_text=snakemake.params.embed_text,
        max_chars=snakemake.params.max_chars,
        min_chars=snakemake.params.min_chars,
        on_bad_record=snakemake.params.on_bad_record,
        encoding=snakemake.params.encoding,
        hub_mirror=snakemake.params.hub_mirror,
    )
