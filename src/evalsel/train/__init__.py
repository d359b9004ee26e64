"""Stage 6, training: LoRA/QLoRA/full SFT, optional DPO after it, adapter merging, and GGUF base-model import."""
