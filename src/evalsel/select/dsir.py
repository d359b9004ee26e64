"""DSIR (Xie et al. 2023, "Data Selection for Language Models via Importance Resampling") with
hashed n-gram features, on the CPU, with no embedding job.

Features (evalsel.select.ngrams): the counts of a text's hashed 1..n-grams of tokens (an ASCII word or a
single CJK character is a token). Two bag-of-n-grams models are fitted: the target (the benchmark's recall questions, with
``laplace`` pseudo-counts) and the raw pool. A sample's log importance weight is
``sum_j count_j * (log(p_target_j + 1e-8) - log(p_raw_j + 1e-8))``; resampling without replacement
is Gumbel top-k on those log weights (``gumbel: false`` takes the plain top-k). The definitions
follow the paper's released implementation (data-selection), with characters standing in for
words where a language writes none.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm

from evalsel.core.io import atomic_write, write_json, write_jsonl
from evalsel.core.settings import default, entry_default
from evalsel.core.texts import recall_texts
from evalsel.data.poolindex import PoolIndex, iter_records
from evalsel.guard import leak
from evalsel.guard.check import REASONS as GUARD_REASONS
from evalsel.guard.check import ContentGuard, guard_settings
from evalsel.select.ngrams import counts, hashed_grams

log = logging.getLogger(__name__)

EPS = 1e-8


@dataclass(frozen=True)
class DsirSettings:
    ngrams: int = entry_default("arm", "dsir.ngrams")  # 2: unigrams and bigrams (the paper's default)
    buckets: int = entry_default("arm", "dsir.buckets")
    laplace: float = entry_default("arm", "dsir.laplace")  # pseudo-count added to every target bucket
    gumbel: bool = entry_default("arm", "dsir.gumbel")
    min_tokens: int = entry_default(
        "arm", "dsir.min_tokens"
    )  # shorter samples are never selected (the paper's min_example_length)

    def __post_init__(self):
        if not 1 <= self.ngrams <= 5:
            raise ValueError(f"dsir ngrams must be 1..5, got {self.ngrams}")
        if self.buckets < 2:
            raise ValueError(f"dsir buckets must be >= 2, got {self.buckets}")
        if self.laplace < 0 or self.min_tokens < 0:
            raise ValueError("dsir laplace and min_tokens must be >= 0")


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray, laplace: float = 0.0) -> np.ndarray:
    """``log(p_target + 1e-8) - log(p_raw + 1e-8)`` per bucket (the paper's importance estimator)."""
    t = target_counts + laplace
    if t.sum() <= 0 or raw_counts.sum() <= 0:
        raise ValueError("the target or the raw pool has no n-gram: nothing to weigh")
    return np.log(t / t.sum() + EPS) - np.log(raw_counts / raw_counts.sum() + EPS)


def log_weights(texts: list[str], diff: np.ndarray, settings: DsirSettings) -> tuple[np.ndarray, np.ndarray]:
    """``(log importance weight, tokens)`` of each text: the dot product of its counts with ``diff``."""
    b, owner, per_text = hashed_grams(texts, settings.ngrams, settings.buckets)
    return np.bincount(owner, weights=diff[b], minlength=len(texts)), per_text


def gumbel_keys(logw: np.ndarray, seed: int, gumbel: bool = True) -> np.ndarray:
    """Sort keys: log weight plus standard Gumbel noise (top-k of the keys samples k without
    replacement with probabilities proportional to the weights), or the log weights themselves."""
    if not gumbel:
        return logw.astype(np.float64, copy=True)
    return logw + np.random.default_rng(seed).gumbel(size=len(logw))


class _RawModel:
    """The raw (pool) bag-of-n-grams counts, fed one record at a time, hashed a chunk at a time."""

    def __init__(self, s: DsirSettings, chunk: int = 20000):
        self.s, self.chunk, self.buf = s, chunk, []
        self.counts = np.zeros(s.buckets, dtype=np.float64)

    def add(self, rec: dict) -> None:
        self.buf.append(rec["text"])
        if len(self.buf) >= self.chunk:
            self.flush()

    def flush(self) -> np.ndarray:
        if self.buf:
            self.counts += counts(self.buf, self.s.ngrams, self.s.buckets)
            self.buf = []
        return self.counts


def weigh_pool(pool_shards, size: int, diff: np.ndarray, s: DsirSettings, chunk: int = 20000, progress: bool = False):
    """``(log importance weight, tokens)`` of every pool sample, a chunk of texts at a time."""
    logw = np.empty(size, dtype=np.float64)
    n_tok = np.empty(size, dtype=np.int64)
    lo, buf = 0, []

    def flush():
        nonlocal lo, buf
        logw[lo : lo + len(buf)], n_tok[lo : lo + len(buf)] = log_weights(buf, diff, s)
        lo, buf = lo + len(buf), []

    for path in tqdm(pool_shards, desc="dsir: weights", unit="shard", disable=not progress):
        for _, rec in iter_records(path):
            buf.append(rec["text"])
            if len(buf) >= chunk:
                flush()
    flush()
    return logw, n_tok


def _take(order: np.ndarray, pool: PoolIndex, guard: ContentGuard, items, budget: int):
    """Walk ``order`` keeping samples that pass the guard and exact-text dedup, up to ``budget``;
    records are read in chunks sized to what is still missing."""
    kept, drops, guard_drops, texts_seen = [], dict.fromkeys((*GUARD_REASONS, "duplicate_text"), 0), [], set()
    ptr = 0
    while len(kept) < budget and ptr < len(order):
        chunk = order[ptr : ptr + max(256, int(1.5 * (budget - len(kept))))].tolist()
        ptr += len(chunk)
        records = pool.fetch(chunk)
        failing = guard.hits_of(chunk, records, batch=len(chunk))
        for p in chunk:
            if len(kept) >= budget:
                break
            rec, hits = records[p], failing.get(p)
            if hits:
                drops[hits[0].reason] += 1
                guard_drops.extend({"sample_id": rec["id"], **h.record(items)} for h in hits)
                continue
            text = rec["text"].strip()
            if text in texts_seen:
                drops["duplicate_text"] += 1
                continue
            texts_seen.add(text)
            kept.append((p, rec))
    return kept, drops, guard_drops


def dsir_job(
    *,
    benchmark_files: list[str | os.PathLike],
    pool_shards: list[str | os.PathLike],
    selected_path: str | os.PathLike,
    statistics_path: str | os.PathLike,
    histogram_path: str | os.PathLike,
    budget: int,
    recall_splits: list[str],
    query_text: str = default("benchmark.query_text"),
    settings: dict | None = None,
    leak_guard: dict | None = None,
    seed: int = default("seed"),
    progress: bool = True,
) -> dict:
    """Fit both models, weigh every pool sample, keep ``budget`` samples in Gumbel top-k order that
    pass the contamination guard and exact-text dedup. Writes the selection (``similarity`` is the
    log importance weight), statistics and a histogram; returns the statistics."""
    t0 = time.monotonic()
    s = DsirSettings(**(settings or {}))
    if budget < 1:
        raise ValueError(f"dsir needs a budget >= 1, got {budget}")
    items = leak.load_benchmark_items(benchmark_files)
    guard = ContentGuard(items, guard_settings(leak_guard))
    target = recall_texts(benchmark_files, recall_splits, query_text)
    if not target:
        raise ValueError(f"no benchmark question in the recall splits {recall_splits}: DSIR has no target")
    # pass 1 over the shards: the pool's ids and its n-gram model; pass 2: every sample's weight
    raw = _RawModel(s)
    pool = PoolIndex.from_shards(pool_shards, visit=raw.add, progress=progress)
    target_counts = counts(target, s.ngrams, s.buckets)
    diff = log_ratio(target_counts, raw.flush(), s.laplace)
    log.info("dsir: n-gram models of %d target texts and %d pool samples fitted", len(target), pool.size)
    logw, n_tok = weigh_pool(pool_shards, pool.size, diff, s, progress=progress)
    eligible = ~pool.duplicate & (n_tok >= s.min_tokens)
    keys = gumbel_keys(logw, seed, s.gumbel)
    order = np.flatnonzero(eligible)
    order = order[np.lexsort((order, -keys[order]))]
    kept, drops, guard_drops = _take(order, pool, guard, items, budget)
    if len(kept) < budget:
        log.warning("dsir: kept %d of the budget of %d samples (the pool ran out)", len(kept), budget)
    rows = [
        {
            "id": rec["id"],
            "source": rec["source"],
            "subject": None,
            "query_id": None,
            "similarity": round(float(logw[p]), 6),
            "key": round(float(keys[p]), 6),
            "rank": rank,
        }
        for rank, (p, rec) in enumerate(kept, start=1)
    ]
    write_jsonl(selected_path, rows)
    chosen = np.array([p for p, _ in kept], dtype=np.int64)
    stats = {
        "strategy": "dsir",
        "settings": {**asdict(s), "budget": budget, "seed": seed, "query_text": query_text},
        "target": {"texts": len(target), "ngrams": int(target_counts.sum())},
        "pool": {"samples": pool.size, "repeated_ids": pool.n_duplicates, "files": len(pool.files)},
        "overall": {
            "candidates_seen": int(pool.size - pool.n_duplicates),
            "too_short": int((~pool.duplicate & (n_tok < s.min_tokens)).sum()),
            "dropped_guard": {k: drops[k] for k in GUARD_REASONS},
            "dropped_duplicate_text": drops["duplicate_text"],
            "kept": len(kept),
            "budget_shortfall": budget - len(kept),
            "log_weight_selected": _summary(logw[chosen]),
            "log_weight_pool": _summary(logw[eligible]),
        },
        "guard_drops": guard_drops,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, stats)
    _plot(histogram_path, logw[eligible], logw[chosen])
    log.info("dsir: kept %d of %d pool samples in %.1f s", len(kept), pool.size, stats["seconds"])
    return stats


def _summary(v: np.ndarray) -> dict:
    if not len(v):
        return {"n": 0}
    p = np.percentile(v, [5, 50, 95])
    return {"n": int(len(v)), "mean": float(v.mean()), "p5": float(p[0]), "median": float(p[1]), "p95": float(p[2])}


def _plot(path, pool_w: np.ndarray, chosen_w: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.4))
    bins = np.histogram_bin_edges(pool_w if len(pool_w) else [0.0, 1.0], bins=50)
    ax.hist(pool_w, bins=bins, color="#BBBBBB", label=f"pool (n={len(pool_w)})", density=True)
    if len(chosen_w):
        ax.hist(chosen_w, bins=bins, color="#4C72B0", alpha=0.7, label=f"selected (n={len(chosen_w)})", density=True)
    ax.set_xlabel("log importance weight (target vs pool n-gram model)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
