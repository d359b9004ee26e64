"""Snakemake script of rule `rl_train`: GRPO or RLOO from an SFT arm's adapter."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.core.io import job_logging
from evalsel.rl.train import train_rl

p = snakemake.params
base = list(snakemake.input.base)  # the tiny demo model or an imported GGUF file when the DAG builds it
with job_logging(snakemake):
    train_rl(
        prompts_path=snakemake.input.prompts,
        base_model=base[0] if base else p.hub_base_model,
        sft_model=snakemake.input.sft,
        out_dir=snakemake.output.adapter,
        metrics_path=snakemake.output.metrics,
        checkpoint_dir=p.checkpoint_dir,
        curves_png=snakemake.output.curves,
        **dict(p.settings),
        seed=p.seed,
    )
