"""Snakemake script of rule `dpo_train`: DPO on a preference file after the eval-driven SFT."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.dpo import train_dpo
from evalsel.io import job_logging

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
        beta=p.beta,
        epochs=p.epochs,
        max_steps=p.max_steps,
        learning_rate=p.learning_rate,
        per_device_batch_size=p.per_device_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        max_length=p.max_length,
        precision=p.precision,
        gradient_checkpointing=p.gradient_checkpointing,
        lora_r=p.lora_r,
        lora_alpha=p.lora_alpha,
        lora_dropout=p.lora_dropout,
        lora_target_modules=p.lora_target_modules,
        logging_steps=p.logging_steps,
        save_steps=p.save_steps,
        keep_checkpoints=p.keep_checkpoints,
        gpus=p.gpus,
        seed=int(snakemake.wildcards.seed),
    )
