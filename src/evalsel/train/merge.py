"""Merge a LoRA adapter into its base model and save a standalone model directory (with tokenizer)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def merge_adapter(
    base_model: str, adapter_dir: str | os.PathLike, out_dir: str | os.PathLike, dtype: str = "auto"
) -> Path:
    """Write ``base_model`` with ``adapter_dir`` merged into its weights to ``out_dir`` (atomically).

    Returns ``out_dir``, which loads with ``AutoModelForCausalLM.from_pretrained`` alone. The
    weights keep the base model's dtype (``dtype="auto"``) or take ``float32``/``bfloat16``/``float16``.
    A full fine-tuned model directory (no adapter_config.json) is saved as it is. The tokenizer
    comes from the adapter directory when it has one. Refuses a missing ``adapter_dir``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.core.io import atomic_dir
    from evalsel.core.models import is_adapter_dir

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise FileNotFoundError(f"adapter directory {adapter_dir} does not exist")
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base_model
    tokenizer = AutoTokenizer.from_pretrained(str(tok_src))
    if is_adapter_dir(adapter_dir):
        from peft import PeftModel

        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch_dtype)
        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        log.info("merged adapter %s into %s", adapter_dir, base_model)
    else:
        log.info("%s is a full model (no adapter_config.json): saving it as it is", adapter_dir)
        model = AutoModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch_dtype)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    log.info("standalone model written to %s", out_dir)
    return Path(out_dir)
