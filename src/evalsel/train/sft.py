"""Supervised fine-tuning (LoRA, QLoRA or full) on a ShareGPT/alpaca SFT file, loss on assistant
tokens only, with fingerprinted checkpoints that a restarted job resumes from.

Multi-GPU (and DeepSpeed) runs launch ``torchrun ... -m evalsel.train.sft --job JOB.json`` inside the
one calling job; the parent validates the input and prepares the checkpoints first.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from evalsel.core.io import InputError, read_json, read_jsonl, write_json
from evalsel.core.models import set_threads
from evalsel.core.precision import PRECISIONS
from evalsel.core.settings import default
from evalsel.train.lora import check_at_least_one, lora_of

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
METHODS = ("lora", "qlora", "full")
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup")
# Settings that change what is learnt; save/logging cadence and clean-up do not invalidate checkpoints.
_NOT_FINGERPRINTED = {"save_steps", "logging_steps", "keep_checkpoints", "threads"}


@dataclasses.dataclass
class TrainSettings:
    """Every knob of one training run (the ``train:`` config section, seed from the job)."""

    method: str = default("train.method")
    lora_r: int = default("train.lora_r")
    lora_alpha: float = default("train.lora_alpha")
    lora_dropout: float = default("train.lora_dropout")
    lora_target_modules: str | list[str] = default("train.lora_target_modules")
    epochs: float = default("train.epochs")
    max_steps: int | None = default("train.max_steps")
    learning_rate: float = default("train.learning_rate")
    per_device_batch_size: int = default("train.per_device_batch_size")
    gradient_accumulation_steps: int = default("train.gradient_accumulation_steps")
    warmup_ratio: float = default("train.warmup_ratio")
    lr_scheduler: str = default("train.lr_scheduler")
    max_length: int = default("train.max_length")
    precision: str = default("train.precision")
    gradient_checkpointing: bool = default("train.gradient_checkpointing")
    save_steps: int = default("train.save_steps")
    logging_steps: int = default("train.logging_steps")
    deepspeed: str | None = None
    gpus: int = default("train.gpus")
    seed: int = default("train.seeds")[0]
    keep_checkpoints: bool = default("train.keep_checkpoints")
    # CPU threads of this job (torch.set_num_threads); None leaves torch's default (every core)
    threads: int | None = None

    def validate(self) -> None:
        """Raises ValueError naming the first setting out of range."""
        if self.method not in METHODS:
            raise ValueError(f"train method {self.method!r} is not one of {METHODS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r} is not one of {PRECISIONS}")
        if self.lr_scheduler not in SCHEDULERS:
            raise ValueError(f"lr_scheduler {self.lr_scheduler!r} is not one of {SCHEDULERS}")
        check_at_least_one(
            self, ("per_device_batch_size", "gradient_accumulation_steps", "save_steps", "logging_steps")
        )
        if self.max_length < 16:
            raise ValueError(f"max_length must be at least 16, got {self.max_length}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be null or at least 1, got {self.max_steps}")
        if not self.epochs > 0 or not self.learning_rate > 0:
            raise ValueError("epochs and learning_rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be null or at least 1, got {self.threads}")
        if self.gpus < 0:
            raise ValueError(f"gpus must be 0 or more, got {self.gpus}")
        if self.deepspeed is not None and not Path(self.deepspeed).is_file():
            raise ValueError(f"DeepSpeed config {self.deepspeed} does not exist")
        if self.method == "qlora" and self.deepspeed is not None and _zero_stage(self.deepspeed) == 3:
            raise ValueError(
                "method 'qlora' with DeepSpeed ZeRO-3 is not supported (its 4-bit weights would need "
                "bnb_4bit_quant_storage and an unpartitioned loader); the working combinations are "
                "qlora with no DeepSpeed or ZeRO-2, and lora/full with ZeRO-2 or ZeRO-3"
            )
        lora_of(self).validate()


# ---------------------------------------------------------------- model directories


# ---------------------------------------------------------------- data


def load_sft(path: str | os.PathLike) -> list[list[dict]]:
    """Chat messages of every record of an SFT JSONL file (ShareGPT or alpaca).

    Refuses (InputError with file, line, field) malformed records and an empty file.
    """
    from evalsel.core.chat import sft_messages

    conversations = [sft_messages(obj, path, lineno) for lineno, obj in read_jsonl(path)]
    if not conversations:
        raise InputError(path, None, None, "the SFT file has no records")
    return conversations


def tokenize_conversation(tokenizer, messages: list[dict], max_length: int) -> dict[str, Any]:
    """Token ids and labels of one conversation under the tokenizer's chat template.

    Returns ``{"input_ids", "labels", "truncated"}``: labels are -100 except on assistant
    reply tokens (content and end-of-turn marker); sequences are cut to ``max_length``.
    """
    from evalsel.core.chat import assistant_spans

    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [-100] * len(ids)
    for k, (start, _end) in enumerate(enc["offset_mapping"]):
        if any(a <= start < b for a, b in spans):
            labels[k] = ids[k]
    truncated = len(ids) > max_length
    return {"input_ids": ids[:max_length], "labels": labels[:max_length], "truncated": truncated}


def build_dataset(tokenizer, conversations: list[list[dict]], max_length: int) -> tuple[list[dict], dict]:
    """Tokenised training examples and statistics (records, used, truncated, dropped by reason).

    A conversation whose assistant tokens all fall beyond ``max_length`` is dropped and counted.
    """
    from tqdm.auto import tqdm

    examples: list[dict] = []
    stats = {
        "records": len(conversations),
        "used": 0,
        "truncated": 0,
        "dropped": {},
        "tokens": 0,
        "assistant_tokens": 0,
    }
    for messages in tqdm(conversations, desc="tokenise", unit="conv", mininterval=5):
        ex = tokenize_conversation(tokenizer, messages, max_length)
        n_assistant = sum(1 for x in ex["labels"] if x != -100)
        if n_assistant == 0:
            reason = "no_assistant_token_within_max_length"
            stats["dropped"][reason] = stats["dropped"].get(reason, 0) + 1
            continue
        stats["truncated"] += int(ex["truncated"])
        stats["tokens"] += len(ex["input_ids"])
        stats["assistant_tokens"] += n_assistant
        examples.append({"input_ids": ex["input_ids"], "labels": ex["labels"]})
    stats["used"] = len(examples)
    return examples, stats


class PadCollator:
    """Right-pads a batch: ``pad_id`` for inputs, -100 for labels, 0 in the attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}


# ---------------------------------------------------------------- checkpoints


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(base_model: str) -> Any:
    """A local model directory is identified by its files (name, size, mtime); a hub name by itself."""
    path = Path(base_model)
    if not path.is_dir():
        return base_model
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return [base_model] + [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def fingerprint(settings: TrainSettings, sft_path: str | os.PathLike, base_model: str) -> dict:
    """What a checkpoint was trained from: the learning settings, the SFT file hash, the base model."""
    fp = {k: v for k, v in dataclasses.asdict(settings).items() if k not in _NOT_FINGERPRINTED}
    if settings.deepspeed:
        fp["deepspeed"] = file_sha256(settings.deepspeed)
    fp["sft_sha256"] = file_sha256(sft_path)
    fp["base_model"] = model_identity(base_model)
    return json.loads(json.dumps(fp))


def _complete_checkpoints(checkpoint_dir: Path) -> list[Path]:
    found = []
    for p in checkpoint_dir.glob("checkpoint-*"):
        step = p.name.split("-", 1)[1]
        if p.is_dir() and step.isdigit():
            found.append((int(step), p))
    return [p for _, p in sorted(found)]


def prepare_checkpoints(checkpoint_dir: str | os.PathLike, fp: dict) -> Path | None:
    """Returns the checkpoint to resume from, or None to start afresh.

    Checkpoints made with another fingerprint are wiped; a checkpoint that a kill left without its
    ``trainer_state.json`` (written last) is removed and the one before it is used.
    """
    checkpoint_dir = Path(checkpoint_dir)
    fp_path = checkpoint_dir / FINGERPRINT
    if checkpoint_dir.exists():
        old = read_json(fp_path) if fp_path.is_file() else None
        if old != fp:
            log.info("checkpoints in %s were made with other settings or data: starting afresh", checkpoint_dir)
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_json(fp_path, fp)
    resume = None
    for ckpt in _complete_checkpoints(checkpoint_dir):
        if (ckpt / "trainer_state.json").is_file():
            resume = ckpt
        else:
            log.warning("removing incomplete checkpoint %s", ckpt)
            shutil.rmtree(ckpt)
    if resume is not None:
        log.info("resuming from %s", resume)
    return resume


# ---------------------------------------------------------------- the run


def _zero_stage(path: str | os.PathLike) -> int | None:
    """The ZeRO stage of a DeepSpeed JSON config (None when it sets none)."""
    stage = read_json(path).get("zero_optimization", {}).get("stage")
    return None if stage is None else int(stage)


def _job_device_plan(settings: TrainSettings, cuda: bool) -> dict:
    """Precision, DeepSpeed and launcher decisions for this host (CPU falls back and says so; a GPU
    without bf16 trains in fp16, logged)."""
    from evalsel.core.precision import resolve

    deepspeed = settings.deepspeed
    if not cuda:
        if settings.method == "qlora":
            raise RuntimeError("method 'qlora' needs a CUDA GPU (bitsandbytes 4-bit); use 'lora' on CPU")
        if deepspeed:
            log.info("no CUDA device: DeepSpeed (%s) is skipped", deepspeed)
            deepspeed = None
    precision = resolve(settings.precision, cuda=cuda, what="training")
    return {"precision": precision, "deepspeed": deepspeed}


def train(
    sft_path: str | os.PathLike,
    base_model: str,
    out_dir: str | os.PathLike,
    metrics_path: str | os.PathLike,
    curves_png: str | os.PathLike,
    checkpoint_dir: str | os.PathLike,
    callbacks: list | None = None,
    **settings: Any,
) -> dict:
    """Fine-tune ``base_model`` on ``sft_path``; write the adapter (or full model) with its tokenizer
    to ``out_dir``, the metrics JSON and the curves PNG. ``settings`` are :class:`TrainSettings` fields.

    Returns the metrics. Resumes from the newest complete checkpoint in ``checkpoint_dir`` when its
    fingerprint matches. Refuses bad settings, a malformed SFT file (before loading any model),
    QLoRA without CUDA or bitsandbytes. ``callbacks`` (transformers TrainerCallback) run in-process only.
    """
    s = TrainSettings(**settings)
    s.validate()
    conversations = load_sft(sft_path)
    log.info("%d conversations in %s", len(conversations), sft_path)
    if s.method == "qlora":
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError("method 'qlora' needs the bitsandbytes package (pip install bitsandbytes)")
    resume = prepare_checkpoints(checkpoint_dir, fingerprint(s, sft_path, base_model))
    job = {
        "sft_path": str(sft_path),
        "base_model": str(base_model),
        "out_dir": str(out_dir),
        "metrics_path": str(metrics_path),
        "curves_png": str(curves_png),
        "checkpoint_dir": str(checkpoint_dir),
        "resume_from": None if resume is None else str(resume),
        "settings": dataclasses.asdict(s),
    }
    from evalsel.core.gpu import claim

    with claim(s.gpus) as devices:
        nproc = len(devices)
        if s.gpus > 1 and nproc < s.gpus:
            log.warning("asked for %d GPUs, found %d: training in one process", s.gpus, nproc)
        if nproc > 1 or (nproc == 1 and s.deepspeed):
            launch_distributed(job, nproc)
        else:
            run_job(job, callbacks=callbacks)
    return read_json(metrics_path)


def launch_distributed(job: dict, nproc: int) -> None:
    """Run :func:`run_job` in ``nproc`` processes with torchrun (one per GPU) inside this job.

    Raises RuntimeError when torchrun fails; the workers' output goes to this job's stderr (its log).
    """
    with tempfile.NamedTemporaryFile("w", suffix=".json", prefix="evalsel-train-", delete=False) as fh:
        json.dump(job, fh)
        job_file = fh.name
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "evalsel.train.sft",
        "--job",
        job_file,
    ]
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.info("launching: %s", " ".join(cmd))
    try:
        err = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        err = None
    try:
        rc = subprocess.run(cmd, env=env, stdout=err, stderr=err).returncode
    finally:
        os.unlink(job_file)
    if rc != 0:
        raise RuntimeError(f"torchrun exited with status {rc}; see the log above")


def _load_model(base_model: str, s: TrainSettings, plan: dict, cuda: bool):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if plan["precision"] == "bf16":
        kwargs["dtype"] = torch.bfloat16
    elif plan["precision"] == "fp16" and s.method != "full":
        kwargs["dtype"] = torch.float16
    else:
        # full fine-tuning in fp16 keeps fp32 master weights (mixed precision)
        kwargs["dtype"] = torch.float32
    if s.method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"] if kwargs["dtype"] != torch.float32 else torch.float16,
        )
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    if s.gradient_checkpointing:
        model.config.use_cache = False
    if s.method == "full":
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if s.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing)
    return get_peft_model(model, lora_of(s).peft_config())


def _tokens_callback():
    from transformers import TrainerCallback

    class TokenCounter(TrainerCallback):
        """Input tokens seen by this process's session (a resumed run starts from the checkpoint's count)."""

        start = 0
        end = 0

        def on_train_begin(self, args, state, control, **kw):
            self.start = self.end = state.num_input_tokens_seen

        def on_train_end(self, args, state, control, **kw):
            self.end = state.num_input_tokens_seen

    return TokenCounter()


def _training_arguments(s: TrainSettings, checkpoint_dir: str, plan: dict, cuda: bool):
    """transformers' TrainingArguments of these settings and this job's device plan."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=checkpoint_dir,
        per_device_train_batch_size=s.per_device_batch_size,
        gradient_accumulation_steps=s.gradient_accumulation_steps,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps if s.max_steps else -1,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,
        bf16=plan["precision"] == "bf16",
        fp16=plan["precision"] == "fp16",
        activation_checkpointing=s.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if s.gradient_checkpointing else None,
        logging_steps=s.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=2,
        seed=s.seed,
        data_seed=s.seed,
        report_to="none",
        remove_unused_columns=False,
        include_num_input_tokens_seen="non_padding",
        deepspeed=plan["deepspeed"],
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda,
        use_cpu=not cuda,  # also what makes torchrun workers on CPU form one gloo process group
        ddp_find_unused_parameters=False,
    )


def _save(trainer, tokenizer, out_dir: Path) -> bool:
    """Every rank takes part in saving (ZeRO-3 gathers the weights) into a staging folder that
    rank 0 renames to ``out_dir`` with the tokenizer; True on rank 0, which goes on to report."""
    staging = out_dir.parent / f".{out_dir.name}.staging"
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)  # peft writes adapter_config.json from every rank
    trainer.accelerator.wait_for_everyone()
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return False
    tokenizer.save_pretrained(staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(staging, out_dir)
    return True


def run_job(job: dict, callbacks: list | None = None) -> None:
    """One training process (alone, or one torchrun worker): tokenise, train, and on the main
    process write the model directory, metrics and curves, then drop the checkpoints."""
    import torch
    from transformers import AutoTokenizer, Trainer, set_seed

    s = TrainSettings(**job["settings"])
    cuda = torch.cuda.is_available()
    plan = _job_device_plan(s, cuda)
    set_threads(s.threads, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    set_seed(s.seed)
    tokenizer = AutoTokenizer.from_pretrained(job["base_model"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples, data_stats = build_dataset(tokenizer, load_sft(job["sft_path"]), s.max_length)
    if not examples:
        raise InputError(
            job["sft_path"], None, None, f"no conversation has assistant tokens within max_length={s.max_length}"
        )
    log.info("training examples: %s", json.dumps(data_stats))
    args = _training_arguments(s, job["checkpoint_dir"], plan, cuda)
    # the model is loaded after TrainingArguments: with a ZeRO-3 config they register it
    # (HfDeepSpeedConfig), so from_pretrained loads the weights partitioned across ranks
    model = _load_model(job["base_model"], s, plan, cuda)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.3f%%)", trainable, total, 100 * trainable / max(total, 1))

    counter = _tokens_callback()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=PadCollator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=[counter] + list(callbacks or []),
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=job["resume_from"])

    out_dir = Path(job["out_dir"])
    if not _save(trainer, tokenizer, out_dir):
        return
    runtime = float(result.metrics.get("train_runtime", 0.0))
    tokens = counter.end - counter.start  # this session's; counter.end is the whole run's
    final_step = int(trainer.state.global_step)
    resumed_step = _checkpoint_step(job["resume_from"])
    metrics = {
        "base_model": job["base_model"],
        "sft": job["sft_path"],
        "settings": job["settings"],
        "device": "cuda" if cuda else "cpu",
        "world_size": int(trainer.args.world_size),
        "precision": plan["precision"],
        "deepspeed": plan["deepspeed"],
        "resumed_from": None if job["resume_from"] is None else Path(job["resume_from"]).name,
        "data": data_stats,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_step": final_step,
        # the whole run's, also after a resume (the session's own figures are beside them)
        "train_loss": whole_run_loss(trainer.state.log_history, resumed_step, float(result.training_loss), final_step),
        "tokens_seen": int(counter.end),
        "steps_this_session": final_step - resumed_step,
        "train_loss_this_session": float(result.training_loss),
        "tokens_seen_this_session": int(tokens),
        "train_runtime_s": runtime,
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "tokens_per_second": tokens / runtime if runtime > 0 else None,
        **_peak_memory(cuda),
        "log": [_log_row(row) for row in trainer.state.log_history if "loss" in row],
    }
    write_json(job["metrics_path"], metrics)
    plot_curves(metrics["log"], job["curves_png"], title=f"{Path(job['sft_path']).stem} ({s.method}, seed {s.seed})")
    if not s.keep_checkpoints:
        shutil.rmtree(job["checkpoint_dir"], ignore_errors=True)
    log.info(
        "model written to %s; %d steps, final mean loss %.4f", out_dir, metrics["global_step"], metrics["train_loss"]
    )


def _checkpoint_step(checkpoint: str | os.PathLike | None) -> int:
    """The optimiser step of a ``checkpoint-N`` directory (0 for a fresh run)."""
    if checkpoint is None:
        return 0
    return int(Path(checkpoint).name.rsplit("-", 1)[1])


def whole_run_loss(log_history: list[dict], resumed_step: int, session_loss: float, final_step: int) -> float:
    """The mean training loss over all ``final_step`` steps of a run resumed at ``resumed_step``.

    transformers reports the mean over the resumed session only; the steps before come from the
    checkpoint's log (each entry is the mean loss since the previous entry), so this is exact when
    ``save_steps`` is a multiple of ``logging_steps`` (a gap between the last log and the checkpoint
    takes the last logged loss).
    """
    if final_step <= 0:
        return session_loss
    before, prev, last = 0.0, 0, None
    for row in sorted(
        (r for r in log_history if "loss" in r and r.get("step", 0) <= resumed_step), key=lambda r: r["step"]
    ):
        before += float(row["loss"]) * (row["step"] - prev)
        prev, last = row["step"], float(row["loss"])
    if resumed_step > prev:
        before += (last if last is not None else session_loss) * (resumed_step - prev)
    return (before + session_loss * (final_step - resumed_step)) / final_step


def _log_row(row: dict) -> dict:
    keep = ("step", "epoch", "loss", "learning_rate", "grad_norm", "num_input_tokens_seen")
    return {k: row[k] for k in keep if k in row}


def _peak_memory(cuda: bool) -> dict:
    import torch

    if cuda:
        return {"peak_memory_mb": torch.cuda.max_memory_allocated() / 2**20, "peak_memory_kind": "cuda_max_allocated"}
    import resource

    return {
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_memory_kind": "cpu_max_rss",
    }


# The two panels of a training curve: (log key, axis label, colour) each.
SFT_CURVES = (
    ("loss", "training loss (assistant tokens)", "tab:blue"),
    ("learning_rate", "learning rate", "tab:orange"),
)


def plot_curves(rows: list[dict], png_path: str | os.PathLike, title: str = "", panels=SFT_CURVES) -> None:
    """Two logged values (``panels``; default loss and learning rate) against the optimiser step,
    side by side, as a PNG (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from evalsel.core.io import atomic_write

    steps = [r["step"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, (key, label, colour) in zip(axes, panels):
        ax.plot(steps, [r.get(key, float("nan")) for r in rows], marker=".", color=colour)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(png_path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    """torchrun worker entry: ``python -m evalsel.train.sft --job JOB.json`` (written by :func:`train`)."""
    from evalsel.core.io import setup_logging

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", required=True, help="JSON file written by evalsel.train.sft.train")
    ns = parser.parse_args(argv)
    setup_logging(None)
    run_job(read_json(ns.job))


if __name__ == "__main__":
    main()
