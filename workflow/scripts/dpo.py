"""Snakemake script of rule `dpo_train`: DPO on a preference file after the eval-driven SFT."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.train.dpo import train_dpo

p = snakemake.params
base = list(snakemake.input.base)  # the tiny demo model when the DAG builds it
with job_logging(snakemake):
    train_dpo(
        preferences_path=snakemake.input.preferences,
        base_model=base[0] if base else p.hub_base_model,
        sft_adapter=snakemake.input.sft_adapter or None,
        out_dir=snakemake.output.adapter,
        metrics_path=snakemake.output.metrics,
        checkpoint_dir=p.checkpoint_dir,
        curves_png=snakemake.output.curves,
        **dict(p.settings),
        seed=p.seed,
    )
