"""What the trl-trained stages (DPO here, RL after it) share: the arguments every trainer config
takes from the run's settings, the reference policy a trainer really holds, and the run's figures."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def trainer_args(s, checkpoint_dir, precision: str, cuda: bool) -> dict:
    """The ``TrainingArguments`` shared by trl's DPO, GRPO and RLOO configs, from settings ``s``
    (epochs, max_steps, learning_rate, precision, checkpointing and logging cadences, seed)."""
    return {
        "output_dir": str(checkpoint_dir),
        "num_train_epochs": s.epochs,
        "max_steps": s.max_steps if s.max_steps else -1,
        "learning_rate": s.learning_rate,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": s.gradient_checkpointing,
        "logging_steps": s.logging_steps,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": s.save_steps,
        "save_total_limit": 2,
        "seed": s.seed,
        "data_seed": s.seed,
        "report_to": "none",
        "dataloader_num_workers": 0,
        "use_cpu": not cuda,
    }


def reference_kept(trainer, adapter_reference: bool, reference: str) -> str:
    """The reference policy the trainer really holds. ``adapter_reference``: the reference should be
    a frozen copy of the SFT adapter; older trl (and LoRA on target_parameters with peft < 0.20)
    keep no such copy and disable the adapter for the reference instead."""
    if adapter_reference and "ref" not in getattr(trainer.model, "peft_config", {}):
        log.warning("this trl/peft version keeps no frozen copy of the SFT adapter: the reference is the base model")
        return "the base model (trl kept no copy of the SFT adapter)"
    return reference


def run_figures(trainer, result) -> dict:
    """Steps, mean training loss and runtime of a finished ``trainer.train()``."""
    return {
        "global_step": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "train_runtime_s": float(result.metrics.get("train_runtime", 0.0)),
    }
