"""Optional DPO stage after SFT (trl DPOTrainer, LoRA) on a prompt/chosen/rejected preference file.

DPO continues training the eval-driven SFT adapter, against a frozen copy of that adapter as the
reference policy, so the result is again an adapter on the base model (evaluated and merged like
the SFT arms). Without an SFT adapter a fresh LoRA is trained against the base model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Any

from evalsel.core.io import InputError, read_jsonl, write_json
from evalsel.core.precision import PRECISIONS
from evalsel.core.settings import default, fields_from
from evalsel.train.lora import check_at_least_one, lora_of
from evalsel.train.runs import reference_kept, run_figures, trainer_args
from evalsel.train.sft import TrainSettings

log = logging.getLogger(__name__)

_NOT_FINGERPRINTED = {"save_steps", "logging_steps", "keep_checkpoints", "gpus"}


@dataclasses.dataclass
@fields_from(
    TrainSettings,
    "max_steps",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "precision",
    "gradient_checkpointing",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_target_modules",
    "logging_steps",
    "save_steps",
    "seed",
    "keep_checkpoints",
)
class DPOSettings:
    """Knobs of one DPO run: the ``dpo:`` config section's own, then the batch, LoRA, precision and
    cadence settings of ``train:`` (declared by TrainSettings, taken from there)."""

    beta: float = default("dpo.beta")
    epochs: float = default("dpo.epochs")
    learning_rate: float = default("dpo.learning_rate")
    gpus: int = min(1, default("train.gpus"))  # one process

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if not self.beta > 0 or not self.learning_rate > 0 or not self.epochs > 0:
            raise ValueError("dpo beta, learning_rate and epochs must be positive")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        check_at_least_one(
            self, ("per_device_batch_size", "gradient_accumulation_steps", "logging_steps", "save_steps")
        )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be null or at least 1, got {self.max_steps}")
        if self.max_length < 16:
            raise ValueError(f"max_length must be at least 16, got {self.max_length}")
        lora_of(self).validate()


def load_preferences(path: str | os.PathLike) -> list[dict]:
    """Records of a preference JSONL file: ``{"prompt", "chosen", "rejected", "system"?}``, all strings.

    Refuses (InputError with file, line and field): malformed JSON, a record that is not an object,
    a missing, non-string or blank field, ``chosen`` identical to ``rejected`` (no preference to
    learn), unknown fields, and a file without records.
    """
    records = []
    allowed = {"prompt", "chosen", "rejected", "system", "id"}
    for lineno, obj in read_jsonl(path):
        if not isinstance(obj, dict):
            raise InputError(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
        for field in ("prompt", "chosen", "rejected"):
            if field not in obj:
                raise InputError(path, lineno, field, "missing")
            if not isinstance(obj[field], str) or not obj[field].strip():
                raise InputError(path, lineno, field, "must be a non-empty string")
        if "system" in obj and not isinstance(obj["system"], str):
            raise InputError(path, lineno, "system", "must be a string")
        extra = sorted(set(obj) - allowed)
        if extra:
            raise InputError(path, lineno, extra[0], f"unknown field (expected {sorted(allowed)})")
        if obj["chosen"].strip() == obj["rejected"].strip():
            raise InputError(path, lineno, "rejected", "identical to 'chosen': nothing to prefer")
        records.append(obj)
    if not records:
        raise InputError(path, None, None, "the preference file has no records")
    return records


def to_conversational(records: list[dict]) -> list[dict]:
    """trl's conversational preference format: prompt messages, chosen/rejected assistant turns."""
    out = []
    for r in records:
        prompt = [{"role": "system", "content": r["system"]}] if r.get("system") else []
        prompt.append({"role": "user", "content": r["prompt"]})
        out.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    return out


def dpo_fingerprint(s: DPOSettings, preferences_path, base_model: str, sft_adapter: str | None) -> dict:
    """What a DPO checkpoint was trained from: settings, preference file, base model, SFT adapter."""
    from evalsel.train.sft import file_sha256, model_identity

    fp = {k: v for k, v in dataclasses.asdict(s).items() if k not in _NOT_FINGERPRINTED}
    fp["preferences_sha256"] = file_sha256(preferences_path)
    fp["base_model"] = model_identity(base_model)
    fp["sft_adapter"] = None if sft_adapter is None else model_identity(sft_adapter)
    return json.loads(json.dumps(fp))


def _eval_row(metrics: dict) -> dict:
    keep = (
        "loss",
        "rewards/margins",
        "rewards/accuracies",
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "logps/rejected",
    )
    return {k: float(metrics[f"eval_{k}"]) for k in keep if f"eval_{k}" in metrics}


def _load_policy(base_model: str, sft_adapter, s: DPOSettings, precision: str):
    """``(model, tokenizer, peft_config, reference)``: the SFT adapter trained further (its frozen
    copy the reference), or the base model with a fresh LoRA (the base the reference)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # fp16 mixed precision keeps fp32 master weights (the grad scaler refuses fp16 parameters)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # the SFT job saves its tokenizer beside the adapter; fall back to the base model's
    has_tok = sft_adapter is not None and (Path(sft_adapter) / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(sft_adapter) if has_tok else base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
    if sft_adapter is not None:
        model = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
        return model, tokenizer, None, "the SFT adapter (frozen copy)"
    return model, tokenizer, lora_of(s).peft_config(), "the base model"


def _dpo_config(s: DPOSettings, checkpoint_dir, precision: str, cuda: bool):
    """trl's DPOConfig of these settings."""
    from trl import DPOConfig

    return DPOConfig(
        **trainer_args(s, checkpoint_dir, precision, cuda),
        beta=s.beta,
        per_device_train_batch_size=s.per_device_batch_size,
        per_device_eval_batch_size=s.per_device_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        max_length=s.max_length,
        eval_strategy="no",
    )


def _log_rows(history: list[dict]) -> list[dict]:
    """The training log's loss rows, with the DPO columns the curves and the metrics keep."""
    keep = ("step", "epoch", "loss", "learning_rate", "rewards/margins", "rewards/accuracies")
    return [{k: row[k] for k in keep if k in row} for row in history if "loss" in row]


def train_dpo(
    preferences_path: str | os.PathLike,
    base_model: str,
    sft_adapter: str | os.PathLike | None,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    curves_png: str | os.PathLike | None = None,
    **settings: Any,
) -> dict:
    """Train DPO; write the LoRA adapter (with tokenizer) to ``out_dir`` and the metrics JSON.

    ``settings`` are :class:`DPOSettings` fields. With ``sft_adapter`` the SFT adapter is trained
    further and a frozen copy of it is the reference; without, a fresh LoRA is trained on the base.
    The metrics hold the DPO loss and implicit reward margin on the preference pairs before and
    after training. Resumes from a checkpoint in ``checkpoint_dir`` made with the same fingerprint.
    Refuses bad settings and a malformed preference file before loading any model; an
    ``sft_adapter`` that is not a PEFT adapter directory.
    """
    import torch
    from datasets import Dataset
    from trl import DPOTrainer

    from evalsel.core.gpu import claim
    from evalsel.core.io import atomic_dir
    from evalsel.core.models import is_adapter_dir
    from evalsel.core.precision import resolve
    from evalsel.train.sft import plot_curves, prepare_checkpoints

    s = DPOSettings(**settings)
    s.validate()
    records = load_preferences(preferences_path)
    log.info("%d preference pairs in %s", len(records), preferences_path)
    if sft_adapter is not None and not is_adapter_dir(sft_adapter):
        raise InputError(sft_adapter, None, None, "not a PEFT adapter directory (no adapter_config.json)")
    resume = prepare_checkpoints(
        checkpoint_dir,
        dpo_fingerprint(s, preferences_path, base_model, None if sft_adapter is None else str(sft_adapter)),
    )

    with claim(s.gpus):
        cuda = torch.cuda.is_available()
        precision = resolve(s.precision, cuda=cuda, what="DPO")
        model, tokenizer, peft_config, reference = _load_policy(base_model, sft_adapter, s, precision)
        data = Dataset.from_list(to_conversational(records))
        args = _dpo_config(s, checkpoint_dir, precision, cuda)
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=data,
            eval_dataset=data,
            processing_class=tokenizer,
            peft_config=peft_config,
        )
        reference = reference_kept(trainer, sft_adapter is not None, reference)
        # on the pairs themselves: the direction check (loss below log 2, positive margin), not generalisation
        before = _eval_row(trainer.evaluate())
        log.info("before DPO: %s", before)
        result = trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        after = _eval_row(trainer.evaluate())
        log.info("after DPO: %s", after)

        with atomic_dir(out_dir) as tmp:
            trainer.model.save_pretrained(tmp, selected_adapters=["default"])
            tokenizer.save_pretrained(tmp)

    rows = _log_rows(trainer.state.log_history)
    metrics = {
        "preferences": str(preferences_path),
        "pairs": len(records),
        "base_model": str(base_model),
        "sft_adapter": None if sft_adapter is None else str(sft_adapter),
        "reference": reference,
        "settings": dataclasses.asdict(s),
        "device": "cuda" if cuda else "cpu",
        "precision": precision,
        "resumed_from": None if resume is None else Path(resume).name,
        **run_figures(trainer, result),
        "log_2": math.log(2),
        "before": before,
        "after": after,
        "log": rows,
    }
    write_json(metrics_path, metrics)
    if curves_png is not None and rows:
        plot_curves(rows, curves_png, title=f"DPO on {Path(preferences_path).name} (seed {s.seed})")
    if not s.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info(
        "DPO adapter written to %s; %d steps; margin %.4f -> %.4f",
        out_dir,
        metrics["global_step"],
        before.get("rewards/margins", float("nan")),
        after.get("rewards/margins", float("nan")),
    )
    return metrics
