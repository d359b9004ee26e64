"""Optional reinforcement-learning stage after SFT: GRPO (default) or RLOO (trl), with a
verifiable reward: the option a completion chooses is the question's answer.

The prompts (:mod:`evalsel.rl.prompts`) are labelled benchmark questions of splits that are never
scored (``rl.splits``), asked as the evaluation asks them (the subject header, the lettered options, the answer cue). A
completion earns 1 when it chooses the answer and 0 otherwise; a completion whose choice cannot
be read strictly earns 0 (:func:`parse_choice`). An optional format reward (``rl.format_weight``)
pays for a readable choice, right or wrong.

RL continues an SFT arm's adapter (each seed its own): the adapter is trained further and a
frozen copy of it is the KL reference (``rl.beta`` > 0), so the result is again an adapter on the
base model, evaluated, reported and merged like the SFT arms.

trl dropped ``PPOTrainer`` (moved to ``trl.experimental`` in 1.10, removed in September 2026,
huggingface/trl#7020): the second method is RLOO, trl's critic-free REINFORCE leave-one-out
trainer, which takes the same verifiable reward.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import unicodedata
from pathlib import Path
from typing import Any

from evalsel.core.io import InputError, read_jsonl, write_json
from evalsel.core.precision import PRECISIONS
from evalsel.core.records import LETTERS
from evalsel.core.settings import default, fields_from
from evalsel.train.lora import check_at_least_one
from evalsel.train.runs import reference_kept, run_figures, trainer_args
from evalsel.train.sft import TrainSettings

log = logging.getLogger(__name__)

METHODS = ("grpo", "rloo")
_NOT_FINGERPRINTED = {"save_steps", "logging_steps", "keep_checkpoints", "gpus"}


# ---------------------------------------------------------------- the reward


_TRAILING = " \t\n.,;:!?。，；：！？)）]】\"'”’"
_AFTER_LETTER = ".)）]】．:：、,，;；。\n"


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).strip().casefold()


def parse_choice(text: str, choices: list[str]) -> str | None:
    """The option letter a completion chooses, read strictly, or None.

    Two forms count, at the very start of the completion (after spaces and an opening bracket):
    one of the question's own letters standing alone ("B", "B.", "(B)", "B) ...", "B 是"), or
    the full text of exactly one option followed by nothing or by a break (punctuation, a space,
    the end). Text is compared after NFKC folding and case folding. Anything else, "Answer: B"
    and a letter inside a word included, is unreadable: None.
    """
    t = unicodedata.normalize("NFKC", text).strip().lstrip("([【（ ")
    if not t:
        return None
    valid = LETTERS[: len(choices)]
    if t[0] in valid:
        rest = t[1:].lstrip()
        # the letter alone, or followed by punctuation or by a non-Latin word ("B 是正确的"):
        # not "A patient ..." nor "Ab"
        if not rest or not rest[0].isascii() or t[1] in _AFTER_LETTER:
            return t[0]
    folded = _fold(t)
    hits = []
    for letter, option in zip(valid, choices):
        o = _fold(option).rstrip(_TRAILING)
        if o and folded.startswith(o):
            rest = folded[len(o) :]
            # a break after the option: its text is not the start of a longer word
            if not rest or not (rest[0].isalnum() and (o[-1].isascii() and o[-1].isalnum())):
                hits.append((len(o), letter))
    if not hits:
        return None
    hits.sort(reverse=True)
    # the longest option that fits; two of the same length ("A" twice) cannot be told apart
    if len(hits) > 1 and hits[0][0] == hits[1][0]:
        return None
    return hits[0][1]


def completion_text(completion: Any) -> str:
    """The text of a trl completion: a string, or conversational ``[{"role", "content"}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content", "")) for m in completion if isinstance(m, dict))
    return str(completion)


def answer_reward(completions: list, answer: list[str], choices: list[list[str]], **_: Any) -> list[float]:
    """trl reward function: 1.0 where the completion chooses the answer, else 0.0."""
    return [1.0 if parse_choice(completion_text(c), ch) == a else 0.0 for c, a, ch in zip(completions, answer, choices)]


def format_reward(completions: list, choices: list[list[str]], **_: Any) -> list[float]:
    """trl reward function: 1.0 where a choice can be read from the completion, else 0.0."""
    return [0.0 if parse_choice(completion_text(c), ch) is None else 1.0 for c, ch in zip(completions, choices)]


# ---------------------------------------------------------------- the prompts


def load_rl_prompts(path: str | os.PathLike) -> list[dict]:
    """The records :func:`evalsel.rl.prompts.build_rl_prompts` wrote; refuses a malformed one (file, line, field)."""
    out = []
    for line, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise InputError(path, line, None, "expected a JSON object")
        if not isinstance(rec.get("prompt"), list) or not rec["prompt"]:
            raise InputError(path, line, "prompt", "must be a non-empty list of chat messages")
        ch = rec.get("choices")
        if not isinstance(ch, list) or not 2 <= len(ch) <= 5 or not all(isinstance(c, str) for c in ch):
            raise InputError(path, line, "choices", "must be a list of 2 to 5 strings")
        if rec.get("answer") not in tuple(LETTERS[: len(ch)]):
            raise InputError(path, line, "answer", f"{rec.get('answer')!r} is not one of the option letters")
        out.append(rec)
    if not out:
        raise InputError(path, None, None, "no RL prompts")
    return out


# ---------------------------------------------------------------- settings


@dataclasses.dataclass
@fields_from(
    TrainSettings, "precision", "gradient_checkpointing", "logging_steps", "save_steps", "seed", "keep_checkpoints"
)
class RLSettings:
    """Knobs of one RL run: the ``rl:`` config section's own, then precision and cadences of
    ``train:`` (declared by TrainSettings, taken from there)."""

    method: str = default("rl.method")
    num_generations: int = default("rl.num_generations")
    prompts_per_step: int = default("rl.prompts_per_step")
    max_completion_length: int = default("rl.max_completion_length")
    temperature: float = default("rl.temperature")
    beta: float = default("rl.beta")
    learning_rate: float = default("rl.learning_rate")
    epochs: float = default("rl.epochs")
    max_steps: int | None = default("rl.max_steps")
    format_weight: float = default("rl.format_weight")
    gpus: int = min(1, default("train.gpus"))  # one process

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if self.method not in METHODS:
            raise ValueError(f"rl.method {self.method!r} is not one of {METHODS}")
        if self.num_generations < 2:
            raise ValueError(f"rl.num_generations must be at least 2 (a group to compare), got {self.num_generations}")
        check_at_least_one(self, ("prompts_per_step", "max_completion_length", "logging_steps", "save_steps"))
        if not self.learning_rate > 0 or not self.epochs > 0 or not self.temperature > 0:
            raise ValueError("rl learning_rate, epochs and temperature must be positive")
        if self.beta < 0 or self.format_weight < 0:
            raise ValueError("rl beta and format_weight must not be negative")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be null or at least 1, got {self.max_steps}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")


def rl_fingerprint(s: RLSettings, prompts_path, base_model: str, sft_model: str) -> dict:
    """What an RL checkpoint was trained from: settings, prompts, base model, SFT model."""
    from evalsel.train.sft import file_sha256, model_identity

    fp = {k: v for k, v in dataclasses.asdict(s).items() if k not in _NOT_FINGERPRINTED}
    fp["prompts_sha256"] = file_sha256(prompts_path)
    fp["base_model"] = model_identity(base_model)
    fp["sft_model"] = model_identity(sft_model)
    return json.loads(json.dumps(fp))


def _rl_config(s: RLSettings, checkpoint_dir, precision: str, cuda: bool):
    """trl's GRPOConfig or RLOOConfig of these settings: one optimiser step takes
    ``prompts_per_step`` prompts with ``num_generations`` sampled completions each."""
    if s.method == "grpo":
        from trl import GRPOConfig as Config
    else:
        from trl import RLOOConfig as Config
    return Config(
        **trainer_args(s, checkpoint_dir, precision, cuda),
        num_generations=s.num_generations,
        per_device_train_batch_size=s.prompts_per_step * s.num_generations,
        gradient_accumulation_steps=1,
        max_completion_length=s.max_completion_length,
        temperature=s.temperature,
        beta=s.beta,
        reward_weights=[1.0, s.format_weight] if s.format_weight else [1.0],
        log_completions=False,
    )


def _load_policy(base_model: str, sft_model: str, precision: str):
    """``(model, tokenizer, is_adapter)``: the SFT adapter made trainable on the base model, or a
    full SFT model folder (train.method full)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalsel.core.models import is_adapter_dir

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    has_tok = (Path(sft_model) / "tokenizer_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(str(sft_model) if has_tok else base_model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # generation batches are left-padded
    tokenizer.padding_side = "left"
    if is_adapter_dir(sft_model):
        model = AutoModelForCausalLM.from_pretrained(base_model, dtype=dtype)
        return PeftModel.from_pretrained(model, str(sft_model), is_trainable=True), tokenizer, True
    return AutoModelForCausalLM.from_pretrained(str(sft_model), dtype=dtype), tokenizer, False


def greedy_reward(model, tokenizer, prompts: list[dict], max_new_tokens: int) -> dict:
    """Mean answer and format reward of greedy completions of the prompts (the direction check:
    on the RL prompts themselves, not generalisation)."""
    from evalsel.evaluate.multiple_choice import generate_answers

    texts = [tokenizer.apply_chat_template(p["prompt"], tokenize=False, add_generation_prompt=True) for p in prompts]
    was_training = model.training
    model.eval()
    outs = generate_answers(model, tokenizer, texts, batch_size=16, max_new_tokens=max_new_tokens)
    if was_training:
        model.train()
    answers = [p["answer"] for p in prompts]
    choices = [p["choices"] for p in prompts]
    right = answer_reward(outs, answers, choices)
    readable = format_reward(outs, choices)
    return {
        "answer_reward": sum(right) / len(right),
        "readable": sum(readable) / len(readable),
        "examples": [{"id": p["id"], "completion": o} for p, o in list(zip(prompts, outs))[:5]],
    }


def _log_rows(log_history: list[dict]) -> list[dict]:
    keep = ("step", "epoch", "loss", "reward", "reward_std", "kl", "learning_rate", "completions/mean_length")
    rows = []
    for row in log_history:
        if "reward" in row:
            out = {k: row[k] for k in keep if k in row}
            out.update({k: row[k] for k in row if k.startswith("rewards/") and k.endswith("/mean")})
            rows.append(out)
    return rows


# The panels of an RL run's curves (evalsel.train.sft.plot_curves).
RL_CURVES = (
    ("reward", "mean reward of sampled completions", "tab:green"),
    ("kl", "KL to the SFT reference", "tab:purple"),
)


# ---------------------------------------------------------------- the run


def train_rl(
    prompts_path: str | os.PathLike,
    base_model: str,
    sft_model: str | os.PathLike,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    curves_png: str | os.PathLike | None = None,
    **settings: Any,
) -> dict:
    """Train RL from an SFT model; write the adapter (or full model) with its tokenizer to
    ``out_dir`` and the metrics JSON.

    ``settings`` are :class:`RLSettings` fields. The metrics hold the greedy answer reward on the
    RL prompts before and after training and the reward curve. Resumes from a checkpoint in
    ``checkpoint_dir`` made with the same fingerprint. Refuses bad settings, a malformed prompt
    file and an SFT model that is neither an adapter nor a model folder before loading any model.
    """
    import torch
    from datasets import Dataset

    from evalsel.core.gpu import claim
    from evalsel.core.io import atomic_dir
    from evalsel.core.models import is_adapter_dir
    from evalsel.core.precision import resolve
    from evalsel.train.sft import prepare_checkpoints

    s = RLSettings(**settings)
    s.validate()
    prompts = load_rl_prompts(prompts_path)
    log.info("%d RL prompts in %s; %s", len(prompts), prompts_path, s.method)
    sft = Path(sft_model)
    if not is_adapter_dir(sft) and not (sft / "config.json").is_file():
        raise InputError(sft, None, None, "not an SFT adapter or model folder (no adapter_config.json, no config.json)")
    resume = prepare_checkpoints(checkpoint_dir, rl_fingerprint(s, prompts_path, base_model, str(sft)))

    with claim(s.gpus):
        cuda = torch.cuda.is_available()
        precision = resolve(s.precision, cuda=cuda, what="RL")
        model, tokenizer, is_adapter = _load_policy(base_model, str(sft), precision)
        before = greedy_reward(model, tokenizer, prompts, s.max_completion_length)
        log.info("before RL: greedy answer reward %.3f", before["answer_reward"])
        data = Dataset.from_list([{k: p[k] for k in ("prompt", "answer", "choices")} for p in prompts])
        args = _rl_config(s, checkpoint_dir, precision, cuda)
        funcs = [answer_reward, format_reward] if s.format_weight else [answer_reward]
        if s.method == "grpo":
            from trl import GRPOTrainer as Trainer
        else:
            from trl import RLOOTrainer as Trainer
        trainer = Trainer(model=model, reward_funcs=funcs, args=args, train_dataset=data, processing_class=tokenizer)
        reference = "the SFT model (frozen copy)" if s.beta > 0 else "none (beta 0: no KL term)"
        reference = reference_kept(trainer, s.beta > 0 and is_adapter, reference)
        result = trainer.train(resume_from_checkpoint=None if resume is None else str(resume))
        after = greedy_reward(trainer.model, tokenizer, prompts, s.max_completion_length)
        log.info("after RL: greedy answer reward %.3f", after["answer_reward"])
        with atomic_dir(out_dir) as tmp:
            if is_adapter:
                trainer.model.save_pretrained(tmp, selected_adapters=["default"])
            else:
                trainer.model.save_pretrained(tmp)
            tokenizer.padding_side = "right"
            tokenizer.save_pretrained(tmp)

    rows = _log_rows(trainer.state.log_history)
    metrics = {
        "method": s.method,
        "prompts": str(prompts_path),
        "n_prompts": len(prompts),
        "base_model": str(base_model),
        "sft_model": str(sft),
        "reference": reference,
        "settings": dataclasses.asdict(s),
        "device": "cuda" if cuda else "cpu",
        "precision": precision,
        "resumed_from": None if resume is None else Path(resume).name,
        **run_figures(trainer, result),
        "before": before,
        "after": after,
        "log": rows,
    }
    write_json(metrics_path, metrics)
    if curves_png is not None:
        from evalsel.train.sft import plot_curves

        title = f"{s.method.upper()} from {sft.parent.parent.name} (seed {s.seed})"
        plot_curves(rows, curves_png, title=title, panels=RL_CURVES)
    if not s.keep_checkpoints:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info(
        "RL adapter written to %s; %d steps; greedy answer reward %.3f -> %.3f",
        out_dir,
        metrics["global_step"],
        before["answer_reward"],
        after["answer_reward"],
    )
    return metrics
