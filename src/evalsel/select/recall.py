"""Recall: selection of pool samples for the benchmark questions from the similarity kernels'
candidates (evalsel.select.kernels), through the contamination guard, exact-text dedup, the per-subject
quota and near-duplicate filters, with statistics and a histogram.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from evalsel.core.io import atomic_write, write_json, write_jsonl
from evalsel.core.settings import default
from evalsel.core.vectors import load_queries
from evalsel.data.poolindex import PoolIndex
from evalsel.guard import leak
from evalsel.guard.check import REASONS as GUARD_REASONS
from evalsel.guard.check import ContentGuard, guard_settings, rows_above
from evalsel.select.kernels import resolve_backend, score_subject_max, score_topk_mean, search_topk

log = logging.getLogger(__name__)

STRATEGIES = ("per_query_topk", "train_topk_mean", "round_robin_max")


# --------------------------------------------------------------------------- selection


@dataclass
class Candidate:
    score: float
    position: int
    query: int  # index of the credited question
    subject: int
    extra: dict


class _Selector:
    """Walks candidates in selection order and keeps those that pass the contamination guard,
    exact-text dedup and the near-duplicate check; records and vectors are loaded in batches as needed."""

    def __init__(
        self,
        pool: PoolIndex,
        guard: ContentGuard | None,
        near_dup: float | None,
        progress: bool,
        queries: np.ndarray | None = None,
        max_similarity: float | None = None,
    ):
        self.pool, self.guard, self.near_dup, self.progress = pool, guard, near_dup, progress
        # A sample recalled by one question may be a copy of another (above max_similarity with it).
        self.queries = queries if max_similarity is not None and queries is not None and len(queries) else None
        self.max_similarity = max_similarity
        self.leaky: set[int] = set()
        self.records: dict[int, dict] = {}
        self.loaded: list[int] = []
        self.vecs = np.empty((0, pool.dim or 0), dtype=np.float32)
        self.neighbours: dict[int, list[int]] = {}
        self.kept: set[int] = set()
        self.texts: set[str] = set()
        self.guard_drops: list[dict] = []
        self.hits: dict[int, list] = {}  # guard hits of the loaded samples, checked a batch at a time

    def load(self, positions: list[int]) -> None:
        new = [p for p in dict.fromkeys(positions) if p not in self.records]
        if not new:
            return
        self.records.update(self.pool.fetch(new, progress=self.progress))
        if self.guard is not None:
            self.hits.update(self.guard.hits_of(new, self.records))
        if self.queries is None and self.near_dup is None:
            self.loaded.extend(new)
            return
        nv = self.pool.gather(new)
        if self.queries is not None:
            self.leaky.update(new[j] for j, _, _ in rows_above(nv, self.queries, self.max_similarity))
        if self.near_dup is not None:
            old = len(self.loaded)
            self.vecs = np.concatenate([self.vecs, nv])
            allpos = np.array(self.loaded + new, dtype=np.int64)
            for lo in range(0, len(new), 2048):
                sims = nv[lo : lo + 2048] @ self.vecs.T
                for r, c in zip(*np.nonzero(sims > self.near_dup)):
                    a, b = new[lo + r], int(allpos[c])
                    if a != b:
                        self.neighbours.setdefault(a, []).append(b)
                        if c < old:
                            self.neighbours.setdefault(b, []).append(a)
        self.loaded.extend(new)

    def accept(self, pos: int, items: list[leak.BenchmarkItem]) -> str | None:
        """None when kept, else the reason it is dropped."""
        rec = self.records[pos]
        if self.guard is not None:
            hits = self.hits.get(pos)
            if hits:
                self.guard_drops.extend({"sample_id": rec["id"], **h.record(items)} for h in hits)
                return hits[0].reason
        if pos in self.leaky:  # above max_similarity with another benchmark question
            return "max_similarity"
        text = rec["text"].strip()
        if text in self.texts:
            return "duplicate_text"
        if self.near_dup is not None and any(n in self.kept for n in self.neighbours.get(pos, ())):
            return "near_duplicate"
        self.kept.add(pos)
        self.texts.add(text)
        return None


def _walk(
    lists: list[list[Candidate]],
    selector: _Selector,
    items: list[leak.BenchmarkItem],
    budget: int | None,
    round_robin: bool,
    drops: list[dict[str, int]],
) -> list[Candidate]:
    """Keep candidates in order up to ``budget``: round-robin over the subjects' lists (each subject
    in turn keeps its next acceptable candidate, so none can take the whole budget) or best-first."""
    if not round_robin:
        lists = [sorted((c for lst in lists for c in lst), key=lambda c: (-c.score, c.position))]
    ptr = [0] * len(lists)
    active = [i for i, lst in enumerate(lists) if lst]
    kept: list[Candidate] = []

    def full() -> bool:
        return budget is not None and len(kept) >= budget

    def upcoming() -> list[int]:
        # Positions likely to be examined next: loaded together in one pass over the shards.
        per = 50000 if budget is None else max(512, math.ceil(1.5 * (budget - len(kept)) / len(active)))
        return [c.position for i in active for c in lists[i][ptr[i] : ptr[i] + per]]

    def next_kept(i: int) -> Candidate | None:
        while ptr[i] < len(lists[i]):
            c = lists[i][ptr[i]]
            ptr[i] += 1
            if c.position in selector.kept:  # taken for another subject (round_robin_max lists overlap)
                continue
            if c.position not in selector.records:
                selector.load([c.position] + upcoming())
            reason = selector.accept(c.position, items)
            if reason is None:
                return c
            drops[c.subject][reason] += 1
        return None

    with tqdm(total=budget, desc="select", unit="sample", disable=not selector.progress, leave=False) as bar:
        while active and not full():
            for i in list(active):
                if full():
                    break
                c = next_kept(i)
                if c is None:
                    active.remove(i)
                else:
                    kept.append(c)
                    bar.update(1)
    return kept


# --------------------------------------------------------------------------- candidates per strategy


@dataclass
class _Scored:
    """Each subject's candidates best first, the counts behind them, the pairs above max_similarity."""

    lists: list[list[Candidate]]
    stats: list[dict]
    leak_pairs: list[tuple[int, int, float]]
    leak_total: int


def _sorted(lists: list[list[Candidate]]) -> list[list[Candidate]]:
    return [sorted(lst, key=lambda c: (-c.score, c.position)) for lst in lists]


def _per_query_topk(
    queries, qsub, S, pool, top_k, threshold, max_similarity, block_size, backend, progress, threads
) -> _Scored:
    """Each question's top_k above the threshold; a sample recalled by several questions is credited
    to its best match (then the lowest question)."""
    res = search_topk(queries, pool, top_k, max_similarity, block_size, backend, progress, threads)
    finite = np.isfinite(res.scores)
    passed = finite & (res.scores >= threshold)
    qq, rr = np.nonzero(passed)
    ss, gg = res.scores[qq, rr], res.index[qq, rr]
    order = np.lexsort((qq, -ss, gg))
    first = np.ones(len(order), dtype=bool)
    first[1:] = gg[order][1:] != gg[order][:-1]
    dup_by_subject = np.bincount(qsub[qq[order[~first]]], minlength=S)
    lists: list[list[Candidate]] = [[] for _ in range(S)]
    for j in order[first]:
        q = int(qq[j])
        lists[qsub[q]].append(Candidate(float(ss[j]), int(gg[j]), q, int(qsub[q]), {"query_rank": int(rr[j]) + 1}))
    lists = _sorted(lists)
    stats = []
    for s in range(S):
        sq = qsub == s
        stats.append(
            {
                "candidates_seen": int(sq.sum()) * res.scanned,
                "dropped_max_similarity": int(res.leaks[sq].sum()),
                "recalled": int(finite[sq].sum()),
                "dropped_threshold": int((finite & ~passed)[sq].sum()),
                "dropped_duplicate": int(dup_by_subject[s]),
                "unique": len(lists[s]),
            }
        )
    return _Scored(lists, stats, res.leak_pairs, int(res.leaks.sum()))


def _round_robin_max(queries, qsub, S, pool, budget, threshold, max_similarity, block_size, progress) -> _Scored:
    """RDS+: each subject ranks every sample by its best question of that subject; the walk takes
    the subjects in turn. Headroom for the guard, dedup and samples another subject took first."""
    keep = 2 * math.ceil(budget / S) + 64
    sm = score_subject_max(queries, qsub, S, pool, keep, threshold, max_similarity, block_size, progress)
    lists = _sorted(
        [
            [
                Candidate(sc, g, q, s, {})
                for sc, g, q in zip(sm.score[s].tolist(), sm.index[s].tolist(), sm.query[s].tolist())
            ]
            for s in range(S)
        ]
    )
    stats = [
        {
            "candidates_seen": int(sm.scanned),
            "dropped_max_similarity": int(sm.leaks),
            "recalled": int(sm.scanned - sm.leaks),
            "dropped_threshold": int(sm.below[s]),
            "dropped_duplicate": 0,
            "unique": len(lists[s]),
        }
        for s in range(S)
    ]
    return _Scored(lists, stats, sm.leak_pairs, int(sm.leaks))


def _train_topk_mean(queries, qsub, S, pool, m, budget, threshold, max_similarity, block_size, progress) -> _Scored:
    """Each sample scored by the mean of its m best question similarities, credited to the subject
    of its best question; 2 x budget kept per subject (headroom for the guard and dedup)."""
    ms = score_topk_mean(queries, qsub, S, pool, m, 2 * budget, threshold, max_similarity, block_size, progress)
    lists = _sorted(
        [
            [
                Candidate(sc, g, q, s, {"best_similarity": round(b, 6)})
                for sc, g, q, b in zip(
                    ms.score[s].tolist(), ms.index[s].tolist(), ms.query[s].tolist(), ms.best[s].tolist()
                )
            ]
            for s in range(S)
        ]
    )
    stats = [
        {
            "candidates_seen": int(ms.seen[s]),
            "dropped_max_similarity": int(ms.leaks[s]),
            "recalled": int(ms.passed[s] + ms.below[s]),
            "dropped_threshold": int(ms.below[s]),
            "dropped_duplicate": 0,
            "unique": int(ms.passed[s]),
        }
        for s in range(S)
    ]
    return _Scored(lists, stats, ms.leak_pairs, int(ms.leaks.sum()))


def _write_subjects(recall_outputs, subjects, kept, selector, qids, stats, drops) -> list[list[float]]:
    """One file per subject of its kept samples (best first), and its selection-stage counts in
    ``stats``; returns the similarities kept per subject (the histogram's)."""
    per_subject: list[list[Candidate]] = [[] for _ in subjects]
    for c in kept:
        per_subject[c.subject].append(c)
    hist_values = []
    for s, out in enumerate(recall_outputs):
        chosen = sorted(per_subject[s], key=lambda c: (-c.score, c.position))
        rows = []
        for rank, c in enumerate(chosen, start=1):
            rec = selector.records[c.position]
            rows.append(
                {
                    "id": rec["id"],
                    "source": rec["source"],
                    "subject": subjects[s],
                    "query_id": qids[c.query],
                    "similarity": round(c.score, 6),
                    "rank": rank,
                    **c.extra,
                }
            )
        write_jsonl(out, rows)
        st = stats[s]
        # the contamination guard's drops by reason (max_similarity: above it with another question;
        # with the query itself it is dropped_max_similarity, before the top-k)
        st["dropped_guard"] = {k: drops[s][k] for k in GUARD_REASONS}
        st["dropped_duplicate_text"] = drops[s]["duplicate_text"]
        st["dropped_near_duplicate"] = drops[s]["near_duplicate"]
        st["kept"] = len(chosen)
        st["dropped_budget"] = st["unique"] - st["kept"] - sum(drops[s].values())  # selection-stage drops only
        st["similarity"] = _sim_summary([c.score for c in chosen])
        hist_values.append([c.score for c in chosen])
    return hist_values


def _sim_summary(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    if not len(v):
        return {"n": 0}
    p = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "n": int(len(v)),
        "min": float(v.min()),
        "mean": float(v.mean()),
        "p5": float(p[0]),
        "p25": float(p[1]),
        "median": float(p[2]),
        "p75": float(p[3]),
        "p95": float(p[4]),
        "max": float(v.max()),
    }


def plot_histogram(
    path, subjects: list[str], values: list[list[float]], threshold: float, max_similarity: float | None
) -> None:
    """One histogram of kept similarities per subject, with the threshold and leak bound marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(subjects), figsize=(4.2 * len(subjects), 3.4), squeeze=False, sharey=False)
    for ax, subject, vals in zip(axes[0], subjects, values):
        if len(vals):
            ax.hist(vals, bins=40, color="#4C72B0")
        else:
            ax.text(0.5, 0.5, "nothing kept", ha="center", va="center", transform=ax.transAxes)
        ax.axvline(threshold, color="grey", ls="--", lw=1, label="threshold")
        if max_similarity is not None:
            ax.axvline(max_similarity, color="#C44E52", ls=":", lw=1, label="max_similarity")
        ax.set_title(f"{subject} (n={len(vals)})")
        ax.set_xlabel("similarity")
    axes[0][0].set_ylabel("recalled samples")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def run_recall(*, gpus: int = 0, backend: str = default("recall.backend"), **settings) -> dict:
    """:func:`recall_job` holding ``gpus`` GPUs (evalsel.core.gpu.claim) unless the backend is numpy:
    on CUDA the torch backend computes on a device the scheduler gave this job, never on one
    another job holds."""
    from evalsel.core.gpu import claim

    with claim(int(gpus) if backend != "numpy" else 0):
        return recall_job(backend=backend, **settings)


def recall_job(
    *,
    subjects: list[str],
    query_vectors: list[str | os.PathLike],
    benchmark_files: list[str | os.PathLike],
    pool_vectors: list[str | os.PathLike],
    pool_shards: list[str | os.PathLike],
    recall_outputs: list[str | os.PathLike],
    statistics_path: str | os.PathLike,
    histogram_path: str | os.PathLike,
    strategy: str = default("recall.strategy"),
    top_k: int = default("recall.top_k"),
    similarity_threshold: float = default("recall.similarity_threshold"),
    max_similarity: float | None = default("recall.max_similarity"),
    topk_mean_m: int = default("recall.topk_mean_m"),
    budget: int | None = None,
    per_subject_quota: bool = default("recall.per_subject_quota"),
    near_duplicate_threshold: float | None = None,
    block_size: int = default("recall.block_size"),
    leak_guard: dict | None = None,
    backend: str = default("recall.backend"),
    progress: bool = True,
    threads: int | None = None,
) -> dict:
    """Recall pool samples for each subject's questions and write the per-subject files, statistics
    and histogram. Returns the statistics.

    Order of filters: max_similarity (before the top-k), top_k, similarity_threshold, cross-question
    dedup (best match wins), then in selection order the n-gram guard, exact-text dedup,
    near-duplicates and the budget (round-robin over subjects when ``per_subject_quota``).
    Records: ``rank`` is the 1-based position in the subject file; per_query_topk adds
    ``query_rank`` (position in the question's top-k), train_topk_mean adds ``best_similarity``
    (``similarity`` is then the mean over the ``topk_mean_m`` best questions).
    The numpy top-k of per_query_topk computes with ``threads`` threads (default: every CPU allowed).
    Refuses an unknown strategy, a missing budget for train_topk_mean and mismatched input lists.
    """
    t0 = time.monotonic()
    _check_job(strategy, budget, subjects, query_vectors, recall_outputs)
    items = leak.load_benchmark_items(benchmark_files)
    guard = ContentGuard(items, guard_settings(leak_guard))
    qids, qsub, queries = load_queries(query_vectors, items)
    pool = PoolIndex(pool_vectors, pool_shards)
    S = len(subjects)
    log.info(
        "recall: %d questions, %d pool vectors (%d repeated ids) in %d files, dim %s, strategy %s",
        len(qids),
        pool.size,
        pool.n_duplicates,
        len(pool.files),
        pool.dim,
        strategy,
    )
    stats = [{"questions": int((qsub == s).sum())} for s in range(S)]
    drops = [dict.fromkeys((*GUARD_REASONS, "duplicate_text", "near_duplicate"), 0) for _ in range(S)]

    settings = {
        "top_k": top_k,
        "similarity_threshold": similarity_threshold,
        "max_similarity": max_similarity,
        "topk_mean_m": topk_mean_m,
        "budget": budget,
        "per_subject_quota": per_subject_quota,
        "near_duplicate_threshold": near_duplicate_threshold,
        "block_size": block_size,
        "leak_guard": dict(leak_guard or {}),
        "backend": resolve_backend(backend)[0],
    }
    scored = _score(strategy, queries, qsub, S, pool, settings, backend, progress, threads)
    lists = scored.lists
    for s in range(S):
        stats[s].update(scored.stats[s])

    selector = _Selector(pool, guard, near_duplicate_threshold, progress, queries, max_similarity)
    round_robin = strategy == "round_robin_max" or (per_subject_quota and budget is not None)
    kept = _walk(lists, selector, items, budget, round_robin, drops)
    if budget is not None and len(kept) < budget:
        log.warning("recall: kept %d of the budget of %d samples (the candidates ran out)", len(kept), budget)

    hist_values = _write_subjects(recall_outputs, subjects, kept, selector, qids, stats, drops)
    statistics = _statistics(strategy, settings, subjects, stats, kept, scored, selector, guard, len(items), qids, t0)
    overall = statistics["overall"]
    write_json(statistics_path, statistics)
    plot_histogram(histogram_path, subjects, hist_values, similarity_threshold, max_similarity)
    log.info(
        "recall: kept %d samples (%s) in %.1f s",
        overall["kept"],
        ", ".join(f"{s}: {st['kept']}" for s, st in zip(subjects, stats)),
        statistics["seconds"],
    )
    return statistics


def _score(strategy: str, queries, qsub, S: int, pool, settings: dict, backend: str, progress: bool, threads):
    """The candidates of one strategy (the one dispatch on recall.strategy)."""
    threshold, max_sim, block = settings["similarity_threshold"], settings["max_similarity"], settings["block_size"]
    if strategy == "per_query_topk":
        return _per_query_topk(
            queries, qsub, S, pool, settings["top_k"], threshold, max_sim, block, backend, progress, threads
        )
    if strategy == "round_robin_max":
        return _round_robin_max(queries, qsub, S, pool, settings["budget"], threshold, max_sim, block, progress)
    return _train_topk_mean(
        queries, qsub, S, pool, settings["topk_mean_m"], settings["budget"], threshold, max_sim, block, progress
    )


def _check_job(strategy: str, budget, subjects: list, query_vectors: list, recall_outputs: list) -> None:
    if strategy not in STRATEGIES:
        raise ValueError(f"recall.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy in ("train_topk_mean", "round_robin_max") and budget is None:
        raise ValueError(f"recall.budget is required by strategy {strategy}")
    if not (len(subjects) == len(query_vectors) == len(recall_outputs)):
        raise ValueError(
            f"{len(subjects)} subjects, {len(query_vectors)} query vector files, {len(recall_outputs)} outputs"
        )


def _statistics(
    strategy: str,
    settings: dict,
    subjects: list[str],
    stats: list[dict],
    kept: list,
    scored,
    selector: _Selector,
    guard: ContentGuard,
    n_items: int,
    qids: list[str],
    t0: float,
) -> dict:
    """The recall job's statistics.json: settings, per-subject and overall counts, the recorded
    max_similarity pairs and the guard's drops."""
    pool = selector.pool
    overall = {k: sum(st[k] for st in stats) for k in stats[0] if k not in ("similarity", "dropped_guard")}
    overall["dropped_guard"] = {k: sum(st["dropped_guard"][k] for st in stats) for k in GUARD_REASONS}
    overall["similarity"] = _sim_summary([c.score for c in kept])
    return {
        "strategy": strategy,
        "settings": settings,
        "pool": {"vectors": pool.size, "repeated_ids": pool.n_duplicates, "files": len(pool.files), "dim": pool.dim},
        "benchmark_items_guarded": n_items,
        "benchmark_items_too_short_for_ngram": guard.too_short_for_ngram,
        "subjects": dict(zip(subjects, stats)),
        "overall": overall,
        "max_similarity_drops": {
            "total_pairs": scored.leak_total,
            "recorded": [
                {"query_id": qids[q], "sample_id": pool.ids[p], "similarity": round(v, 6)}
                for q, p, v in scored.leak_pairs
            ],
        },
        "guard_drops": selector.guard_drops,
        "seconds": round(time.monotonic() - t0, 2),
    }
