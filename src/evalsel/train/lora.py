"""The LoRA settings shared by SFT (train.py) and DPO (dpo.py): one type, one validation, one PEFT
config, so that both stages read ``train.lora_*`` the same way."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoraSettings:
    r: int = 16
    alpha: float = 32
    dropout: float = 0.05
    # "all" (every linear layer but the output head) or module names such as ["q_proj", "v_proj"]
    target_modules: str | tuple[str, ...] = "all"

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if int(self.r) < 1:
            raise ValueError(f"lora_r must be at least 1, got {self.r}")
        if not self.alpha > 0:
            raise ValueError(f"lora_alpha must be positive, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.dropout}")
        t = self.target_modules
        if not (t == "all" or (isinstance(t, (list, tuple)) and t and all(isinstance(m, str) for m in t))):
            raise ValueError(f"lora_target_modules must be 'all' or a list of module names, got {t!r}")

    def peft_config(self):
        """The peft ``LoraConfig`` of a causal LM."""
        from peft import LoraConfig

        return LoraConfig(
            r=int(self.r),
            lora_alpha=self.alpha,
            lora_dropout=self.dropout,
            target_modules="all-linear" if self.target_modules == "all" else list(self.target_modules),
            task_type="CAUSAL_LM",
        )


def lora_of(settings) -> LoraSettings:
    """The LoRA settings of a TrainSettings or DPOSettings (their ``lora_*`` fields, one per config key)."""
    t = settings.lora_target_modules
    return LoraSettings(
        r=settings.lora_r,
        alpha=settings.lora_alpha,
        dropout=settings.lora_dropout,
        target_modules=t if t == "all" else tuple(t) if isinstance(t, (list, tuple)) else t,
    )


def check_at_least_one(settings, names: tuple[str, ...]) -> None:
    """Raises ValueError for the first of ``names`` below 1 (batch sizes, step cadences)."""
    for name in names:
        if int(getattr(settings, name)) < 1:
            raise ValueError(f"{name} must be at least 1, got {getattr(settings, name)}")
