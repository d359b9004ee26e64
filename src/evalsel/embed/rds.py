"""RDS+ vectors (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning"): the base
model being fine-tuned embeds each text as the position-weighted mean of its last hidden states
(weights 1, 2, ..., L over the L tokens, normalised: the SGPT pooling), L2-normalised.

Pool samples are embedded whole (the conversation rendered by the model's chat template, as it is
trained); benchmark questions as the user turn. Batched by length, on CUDA in bf16 (fp16 where the
GPU lacks bf16), one pool shard per job like the other embedders; the vectors depend only on the
settings here, so changing a selection setting re-embeds nothing.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from evalsel.core.io import write_json
from evalsel.core.precision import resolve_device
from evalsel.core.settings import default
from evalsel.core.texts import length_batches, read_benchmark_queries
from evalsel.core.vectors import EmbedResult, save_vectors
from evalsel.data.poolindex import iter_records

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RdsSettings:
    """Everything that decides an RDS+ vector, plus how fast it is computed."""

    model: str
    device: str = default("rds.device")
    batch_size: int = default("rds.batch_size")
    max_tokens: int = default("rds.max_tokens")
    dtype: str = default("rds.dtype")  # storage dtype of the vectors
    threads: int | None = None

    def __post_init__(self):
        if not self.model:
            raise ValueError("RDS+ embeds with the base model: a model name or path is needed")
        if self.batch_size < 1 or self.max_tokens < 2:
            raise ValueError("batch_size must be >= 1 and max_tokens >= 2")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype {self.dtype!r} is not float16 or float32")


def position_weighted_mean(hidden, attention_mask):
    """SGPT / RDS+ pooling of right-padded ``hidden`` (batch, length, dim): token t (1-based among
    the real tokens) weighs t / (1 + ... + L); padding weighs 0. Returns (batch, dim) float32."""
    mask = attention_mask.to(hidden.device).float()
    positions = mask.cumsum(dim=1) * mask
    weights = positions / positions.sum(dim=1, keepdim=True)
    return (hidden.float() * weights.unsqueeze(-1)).sum(dim=1)


def _render(tokenizer, messages: list[dict]) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return "\n".join(m["content"] for m in messages)


def pool_messages(rec: dict) -> list[dict]:
    """A pool record's conversation as chat messages (system first when it has one)."""
    roles = {"human": "user", "gpt": "assistant"}
    out = [{"role": "system", "content": rec["system"]}] if rec.get("system") else []
    return out + [{"role": roles[t["from"]], "content": t["value"]} for t in rec["conversations"]]


class RdsEncoder:
    """The base model (no LM head) and its tokenizer, on the resolved device."""

    def __init__(self, settings: RdsSettings):
        import torch
        from transformers import AutoModel, AutoTokenizer

        from evalsel.core.precision import inference_dtype

        t0 = time.monotonic()
        self.settings = settings
        self.device = resolve_device(settings.device)
        if settings.threads and self.device == "cpu":
            torch.set_num_threads(int(settings.threads))
        self.tokenizer = AutoTokenizer.from_pretrained(settings.model)
        self.tokenizer.padding_side = "right"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.dtype = inference_dtype(self.device, "RDS+ embedding")
        self.model = AutoModel.from_pretrained(settings.model, dtype=self.dtype).to(self.device).eval()
        self.load_seconds = time.monotonic() - t0

    def encode(self, texts: list[str], label: str = "texts") -> EmbedResult:
        """L2-normalised RDS+ vectors of ``texts``, longest first in length-bucketed batches."""
        import torch

        t0 = time.monotonic()
        limit = self.settings.max_tokens
        enc = self.tokenizer(texts, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
        lengths = np.array([len(ids) for ids in enc], dtype=np.int64)
        truncated = int((lengths > limit).sum())
        capped = np.maximum(1, np.minimum(lengths, limit))
        order = np.argsort(-capped, kind="stable")
        dim = int(self.model.config.hidden_size)
        out = np.empty((len(texts), dim), dtype=np.float32)
        pad = self.tokenizer.pad_token_id
        with torch.inference_mode(), tqdm(total=len(texts), desc=f"RDS+ {label}", unit="text", mininterval=5) as bar:
            for a, b in length_batches(capped[order], self.settings.batch_size):
                idx = order[a:b]
                width = int(capped[idx].max())
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for r, j in enumerate(idx):
                    row = enc[j][:limit] or [pad]
                    ids[r, : len(row)] = torch.tensor(row)
                    mask[r, : len(row)] = 1
                hidden = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).last_hidden_state
                pooled = position_weighted_mean(hidden, mask).cpu().numpy()
                norms = np.linalg.norm(pooled, axis=1, keepdims=True)
                if not np.all(np.isfinite(norms)) or np.any(norms < 1e-12):
                    raise RuntimeError(f"{label}: a zero or non-finite RDS+ vector (precision {self.dtype})")
                out[idx] = pooled / norms
                bar.update(len(idx))
        device = self.device + ("" if self.device == "cpu" else f" {str(self.dtype).removeprefix('torch.')}")
        log.info("%s: %d texts on %s, %d truncated to %d tokens", label, len(texts), device, truncated, limit)
        return EmbedResult(
            out,
            model=self.settings.model,
            device=device,
            truncated=truncated,
            seconds=time.monotonic() - t0,
            load_seconds=self.load_seconds,
        )


def _write(out_npy, stats_path, ids, res: EmbedResult, settings: RdsSettings, extra: dict) -> dict[str, Any]:
    save_vectors(out_npy, ids, res.vectors, settings.dtype)
    stats = {**extra, **res.statistics("rds", settings.dtype), "pooling": "position_weighted_mean"}
    if stats_path is not None:
        write_json(stats_path, stats)
    return stats


def embed_pool_shard_rds(
    shard: str | os.PathLike, out_npy: str | os.PathLike, stats_path: str | os.PathLike, settings: RdsSettings
) -> dict[str, Any]:
    """RDS+ vectors of one pool shard (whole conversations); writes vectors, ids and statistics."""
    enc = RdsEncoder(settings)
    ids, texts = [], []
    for _, rec in iter_records(shard):
        ids.append(rec["id"])
        texts.append(_render(enc.tokenizer, pool_messages(rec)))
    res = enc.encode(texts, label=str(shard))
    return _write(out_npy, stats_path, ids, res, settings, {"shard": str(shard)})


def embed_benchmark_rds(
    benchmark_jsonl: str | os.PathLike,
    out_npy: str | os.PathLike,
    recall_splits: list[str],
    query_text: str,
    settings: RdsSettings,
) -> dict[str, Any]:
    """RDS+ vectors of one subject's recall-split questions (each as a user turn)."""
    ids, questions = read_benchmark_queries(benchmark_jsonl, recall_splits, query_text)
    enc = RdsEncoder(settings)
    texts = [_render(enc.tokenizer, [{"role": "user", "content": q}]) for q in questions]
    res = enc.encode(texts, label=str(benchmark_jsonl))
    return _write(out_npy, None, ids, res, settings, {"benchmark": str(benchmark_jsonl)})
