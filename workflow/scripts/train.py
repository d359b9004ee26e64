"""Snakemake script of rule `train`: supervised fine-tuning of one arm with one seed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.train.sft import train

p = snakemake.params
base = list(snakemake.input.base)  # the tiny demo model when the DAG builds it
base_model = base[0] if base else p.hub_base_model
deepspeed = list(snakemake.input.deepspeed)  # config/deepspeed/<p.deepspeed>.json when set
with job_logging(snakemake):
    train(
        sft_path=snakemake.input.sft,
        base_model=base_model,
        out_dir=snakemake.output.adapter,
        metrics_path=snakemake.output.metrics,
        curves_png=snakemake.output.curves,
        checkpoint_dir=p.checkpoint_dir,
        **dict(p.settings),
        deepspeed=deepspeed[0] if deepspeed else None,
        threads=snakemake.threads,
        seed=p.seed,
    )
