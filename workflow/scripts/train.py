"""Snakemake script of rule `train`: supervised fine-tuning of one arm with one seed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))  # works without pip install (conda envs)
from evalsel.io import job_logging
from evalsel.train import train

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
        method=p.method,
        lora_r=p.lora_r,
        lora_alpha=p.lora_alpha,
        lora_dropout=p.lora_dropout,
        lora_target_modules=p.lora_target_modules,
        epochs=p.epochs,
        max_steps=p.max_steps,
        learning_rate=p.learning_rate,
        per_device_batch_size=p.per_device_batch_size,
        gradient_accumulation_steps=p.gradient_accumulation_steps,
        warmup_ratio=p.warmup_ratio,
        lr_scheduler=p.lr_scheduler,
        max_length=p.max_length,
        precision=p.precision,
        gradient_checkpointing=p.gradient_checkpointing,
        save_steps=p.save_steps,
        logging_steps=p.logging_steps,
        deepspeed=deepspeed[0] if deepspeed else None,
        gpus=p.gpus,
        threads=snakemake.threads,
        seed=p.seed,
        keep_checkpoints=p.keep_checkpoints,
    )
