"""Recall of pool samples for benchmark questions: exact top-k by inner product streamed over the
pool's vector shards (bounded memory), leak, dedup, quota and near-duplicate filters, statistics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import leak
from .guard import REASONS as GUARD_REASONS
from .guard import ContentGuard, guard_settings
from .io import InputError, atomic_write, write_json, write_jsonl
from .vectors import ids_path, load_vectors

log = logging.getLogger(__name__)

STRATEGIES = ("per_query_topk", "train_topk_mean")
BACKENDS = ("auto", "numpy", "torch")
# Slot filler of the running top-k: sorts after every real pool position.
EMPTY = np.iinfo(np.int64).max
# (question, sample) pairs above max_similarity kept by name for the contamination report.
MAX_RECORDED_LEAKS = 20000


# --------------------------------------------------------------------------- the pool on disk


def _stem(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)] if path.name.endswith(suffix) else path.stem


@dataclass
class PoolFile:
    vectors: Path
    shard: Path | None
    start: int
    count: int


def validate_pool_record(rec, path, lineno) -> None:
    """Refuse a pool record that lacks what training needs (InputError names file, line, field)."""
    if not isinstance(rec, dict):
        raise InputError(path, lineno, None, "expected a JSON object")
    for key in ("id", "source", "text"):
        if not isinstance(rec.get(key), str):
            raise InputError(path, lineno, key, "missing or not a string")
    if not isinstance(rec.get("system", ""), str):
        raise InputError(path, lineno, "system", "not a string")
    if not isinstance(rec.get("medical"), bool):
        raise InputError(path, lineno, "medical", "missing or not true/false")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise InputError(path, lineno, "conversations", "missing or empty")
    for i, turn in enumerate(conv):
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in ("human", "gpt")
            or not isinstance(turn.get("value"), str)
        ):
            raise InputError(path, lineno, f"conversations[{i}]", "expected {'from': 'human'|'gpt', 'value': str}")


class PoolIndex:
    """The pool's vector files (and, when given, their JSONL shards) addressed by one global position.

    Positions follow the order of ``vector_paths`` then rows. A pool id seen again (the same sample
    in two sources) is marked in ``duplicate`` and never scored; ``position`` maps an id to its first
    position. Vector files are matched to shards by ``(source directory, shard name)``.
    """

    def __init__(self, vector_paths: list[str | os.PathLike], shard_paths: list[str | os.PathLike] | None = None):
        if not vector_paths:
            raise InputError(None, None, "pool_vectors", "no pool vector files given")
        shards = {}
        for p in shard_paths or []:
            p = Path(p)
            shards[(p.parent.name, _stem(p, ".jsonl"))] = p
        self.files: list[PoolFile] = []
        self.ids: list[str] = []
        self.dim: int | None = None
        start = 0
        for vp in map(Path, vector_paths):
            fids, mat = load_vectors(vp, mmap=True)
            if self.dim is None:
                self.dim = int(mat.shape[1])
            elif mat.shape[1] != self.dim:
                raise InputError(
                    vp,
                    None,
                    None,
                    f"vector dimension {mat.shape[1]} differs from {self.dim} in {self.files[0].vectors}",
                )
            shard = shards.get((vp.parent.name, _stem(vp, ".npy")))
            if shard_paths is not None and shard is None:
                raise InputError(
                    vp, None, None, f"no pool shard {vp.parent.name}/{_stem(vp, '.npy')}.jsonl among the inputs"
                )
            self.files.append(PoolFile(vp, shard, start, len(fids)))
            self.ids.extend(fids)
            start += len(fids)
            del mat
        self.size = start
        self.starts = np.array([f.start for f in self.files] + [start], dtype=np.int64)
        # Reversed so that the first occurrence of an id is the one that stays in the dict.
        self.position: dict[str, int] = dict(zip(reversed(self.ids), range(start - 1, -1, -1)))
        first = np.fromiter((self.position[i] for i in self.ids), dtype=np.int64, count=start)
        self.duplicate = first != np.arange(start)
        self.n_duplicates = int(self.duplicate.sum())

    @classmethod
    def from_array(cls, mat: np.ndarray) -> PoolIndex:
        """An in-memory pool (tests, benchmarks): one file, positions = rows, no shards."""
        self = cls.__new__(cls)
        self.files = [PoolFile(Path("<array>"), None, 0, len(mat))]
        self._array = mat
        self.ids = [str(i) for i in range(len(mat))]
        self.dim = int(mat.shape[1])
        self.size = len(mat)
        self.starts = np.array([0, len(mat)], dtype=np.int64)
        self.position = {i: n for n, i in enumerate(self.ids)}
        self.duplicate = np.zeros(len(mat), dtype=bool)
        self.n_duplicates = 0
        return self

    def _matrix(self, f: PoolFile) -> np.ndarray:
        arr = getattr(self, "_array", None)
        return arr if arr is not None else load_vectors(f.vectors, mmap=True)[1]

    def blocks(self, block_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(first position, rows as stored, duplicate mask)`` of at most ``block_size`` rows.

        One file is mapped at a time, so resident memory stays near one block whatever the pool size.
        """
        for f in self.files:
            mat = self._matrix(f)
            for lo in range(0, f.count, block_size):
                hi = min(lo + block_size, f.count)
                yield f.start + lo, mat[lo:hi], self.duplicate[f.start + lo : f.start + hi]
            del mat

    def locate(self, positions: np.ndarray) -> np.ndarray:
        """Index of the file holding each position."""
        return np.searchsorted(self.starts, positions, side="right") - 1

    def gather(self, positions) -> np.ndarray:
        """float32 vectors of the given positions, in the given order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim or 0), dtype=np.float32)
        fidx = self.locate(positions)
        for fi in np.unique(fidx):
            sel = np.flatnonzero(fidx == fi)
            f = self.files[fi]
            rows = positions[sel] - f.start
            order = np.argsort(rows, kind="stable")
            mat = self._matrix(f)
            out[sel[order]] = np.asarray(mat[rows[order]], dtype=np.float32)
            del mat
        return out

    def fetch(self, positions, progress: bool = False) -> dict[int, dict]:
        """Pool records of the given positions, read from the shards (only the wanted lines are parsed).

        Raises :class:`InputError` (shard, line, field) when a record is invalid, when its id is not the
        id of the vectors row, or when a shard has fewer records than its vectors file.
        """
        positions = sorted({int(p) for p in positions})
        out: dict[int, dict] = {}
        if not positions:
            return out
        fidx = self.locate(np.array(positions, dtype=np.int64))
        by_file: dict[int, dict[int, int]] = {}
        for p, fi in zip(positions, fidx.tolist()):
            by_file.setdefault(fi, {})[p - self.files[fi].start] = p
        for fi, wanted in tqdm(
            sorted(by_file.items()), desc="read pool shards", unit="shard", disable=not progress, leave=False
        ):
            f = self.files[fi]
            if f.shard is None:
                raise InputError(f.vectors, None, None, "no pool shard to read the records of these vectors from")
            found, row = 0, -1
            with open(f.shard, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    row += 1
                    pos = wanted.get(row)
                    if pos is None:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f.shard, lineno, None, f"malformed JSON ({exc.msg})") from None
                    validate_pool_record(rec, f.shard, lineno)
                    if rec["id"] != self.ids[pos]:
                        raise InputError(
                            f.shard,
                            lineno,
                            "id",
                            f"{rec['id']!r} but row {row} of {ids_path(f.vectors)} is {self.ids[pos]!r}: vectors are stale",
                        )
                    out[pos] = rec
                    found += 1
                    if found == len(wanted):
                        break
            if found < len(wanted):
                raise InputError(f.shard, None, None, f"has {row + 1} records but {f.vectors} has {f.count} vectors")
        return out


# --------------------------------------------------------------------------- exact streamed top-k


def resolve_backend(backend: str) -> tuple[str, str | None]:
    """``(backend, torch device)``: "auto" picks torch on CUDA when present, else numpy BLAS."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "numpy":
        return "numpy", None
    try:
        import torch
    except ImportError:
        if backend == "torch":
            raise ValueError("backend 'torch' asked for but torch is not installed") from None
        return "numpy", None
    cuda = torch.cuda.is_available()
    if backend == "auto" and not cuda:
        return "numpy", None
    return "torch", "cuda" if cuda else "cpu"


@dataclass
class TopK:
    """Per-query top-k over the pool, best first; empty slots hold -inf and EMPTY."""

    scores: np.ndarray  # (Q, k) float32
    index: np.ndarray  # (Q, k) int64 pool positions
    leaks: np.ndarray  # (Q,) pairs above max_similarity, dropped before the top-k
    leak_pairs: list[tuple[int, int, float]] = field(default_factory=list)  # (query, position, similarity)
    scanned: int = 0  # pool samples scored per query (repeated ids excluded)


class _Leaks:
    """Counts of (query, sample) pairs above max_similarity; the first MAX_RECORDED_LEAKS by name."""

    def __init__(self, n_queries: int):
        self.counts = np.zeros(n_queries, dtype=np.int64)
        self.pairs: list[tuple[int, int, float]] = []

    def add(self, rows: np.ndarray, positions: np.ndarray, values: np.ndarray) -> None:
        if not len(rows):
            return
        self.counts += np.bincount(rows, minlength=len(self.counts))
        room = MAX_RECORDED_LEAKS - len(self.pairs)
        if room > 0:
            self.pairs.extend(
                zip(rows[:room].tolist(), positions[:room].tolist(), values[:room].astype(float).tolist())
            )


def _dense_block_topk(S: np.ndarray, k: int, start: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a score block, ordered by (-score, position) within the candidates."""
    Q, b = S.shape
    if b <= k:
        return S.copy(), np.broadcast_to(np.arange(b, dtype=np.int64) + start, (Q, b)).copy()
    vals = np.empty((Q, k), dtype=S.dtype)
    idx = np.empty((Q, k), dtype=np.int64)
    for lo in range(0, Q, chunk):  # row chunks bound the int64 index array argpartition builds
        part = np.argpartition(S[lo : lo + chunk], b - k, axis=1)[:, b - k :]
        idx[lo : lo + chunk] = part
        vals[lo : lo + chunk] = np.take_along_axis(S[lo : lo + chunk], part, axis=1)
    # argpartition picks arbitrarily among scores tied with the k-th: redo such rows exactly so the
    # lowest positions win, as the brute force order (-score, position) says.
    t = vals.min(axis=1)
    ties = (S == t[:, None]).sum(axis=1) > (vals == t[:, None]).sum(axis=1)
    for r in np.flatnonzero(ties & np.isfinite(t)):
        cand = np.flatnonzero(S[r] >= t[r])
        pick = cand[np.lexsort((cand, -S[r, cand]))[:k]]
        idx[r], vals[r] = pick, S[r, pick]
    return vals, idx + start


def _merge_dense(run_s, run_i, new_s, new_i, k):
    s = np.concatenate([run_s, new_s], axis=1)
    i = np.concatenate([run_i, new_i], axis=1)
    order = np.lexsort((i, -s), axis=1)[:, :k]
    return np.take_along_axis(s, order, axis=1), np.take_along_axis(i, order, axis=1)


def _merge_sparse(run_s, run_i, rows, new_i, new_s, k):
    Q = run_s.shape[0]
    R = np.concatenate([np.repeat(np.arange(Q), k), rows])
    V = np.concatenate([run_s.ravel(), new_s])
    Ix = np.concatenate([run_i.ravel(), new_i])
    order = np.lexsort((Ix, -V, R))
    R, V, Ix = R[order], V[order], Ix[order]
    pos = np.arange(len(R)) - np.searchsorted(R, np.arange(Q))[R]
    keep = pos < k  # every row holds exactly k running entries, so k survive per row
    return V[keep].reshape(Q, k), Ix[keep].reshape(Q, k)


def _numpy_search(queries, pool, k, max_sim, block_size, progress):
    Q = len(queries)
    run_s = np.full((Q, k), -np.inf, dtype=np.float32)
    run_i = np.full((Q, k), EMPTY, dtype=np.int64)
    leaks = _Leaks(Q)
    for start, raw, dup in tqdm(
        pool.blocks(block_size), total=_n_blocks(pool, block_size), desc="recall", unit="block", disable=not progress
    ):
        S = queries @ np.asarray(raw, dtype=np.float32).T
        if dup.any():
            S[:, dup] = -np.inf
        b = S.shape[1]
        # Only scores above a row's current k-th can enter (equal ones lose the tie to earlier
        # positions); leaks sit above it too, since the running top-k holds no leak.
        mask = S > run_s[:, -1:]
        n = int(np.count_nonzero(mask))
        if n * 16 > Q * b:
            hot = S > max_sim
            if hot.any():
                r, c = np.nonzero(hot)
                leaks.add(r, c + start, S[r, c])
                S[hot] = -np.inf
            vals, idx = _dense_block_topk(S, k, start)
            if vals.shape[1] < k:
                pad = k - vals.shape[1]
                vals = np.pad(vals, ((0, 0), (0, pad)), constant_values=-np.inf)
                idx = np.pad(idx, ((0, 0), (0, pad)), constant_values=EMPTY)
            run_s, run_i = _merge_dense(run_s, run_i, vals, idx, k)
        elif n:
            r, c = np.nonzero(mask)
            v = S[r, c]
            hot = v > max_sim
            if hot.any():
                leaks.add(r[hot], c[hot] + start, v[hot])
                r, c, v = r[~hot], c[~hot], v[~hot]
            run_s, run_i = _merge_sparse(run_s, run_i, r, c + start, v, k)
    return run_s, run_i, leaks


def _torch_search(queries, pool, k, max_sim, block_size, device, progress):
    import torch

    Q = len(queries)
    qt = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    run_s = np.full((Q, k), -np.inf, dtype=np.float32)
    run_i = np.full((Q, k), EMPTY, dtype=np.int64)
    leaks = _Leaks(Q)
    for start, raw, dup in tqdm(
        pool.blocks(block_size), total=_n_blocks(pool, block_size), desc="recall", unit="block", disable=not progress
    ):
        S = qt @ torch.from_numpy(np.array(raw)).to(device).float().T  # np.array: a writable copy of the mapped rows
        if dup.any():
            S[:, torch.from_numpy(np.flatnonzero(dup)).to(device)] = -math.inf
        hot = S > max_sim
        if bool(hot.any()):
            rc = hot.nonzero()
            leaks.add(rc[:, 0].cpu().numpy(), rc[:, 1].cpu().numpy() + start, S[hot].cpu().numpy())
            S.masked_fill_(hot, -math.inf)
        kk = min(k, S.shape[1])
        vals, idx = torch.topk(S, kk, dim=1, largest=True, sorted=True)
        t = vals[:, -1:]
        ties = ((S == t).sum(1) > (vals == t).sum(1)) & torch.isfinite(t[:, 0])
        vals_np = vals.cpu().numpy()
        idx_np = idx.cpu().numpy().astype(np.int64)
        for r in ties.nonzero()[:, 0].tolist():  # same deterministic tie rule as the numpy path
            row = S[r].cpu().numpy()
            cand = np.flatnonzero(row >= vals_np[r, -1])
            pick = cand[np.lexsort((cand, -row[cand]))[:kk]]
            idx_np[r], vals_np[r] = pick, row[pick]
        idx_np += start
        if kk < k:
            vals_np = np.pad(vals_np, ((0, 0), (0, k - kk)), constant_values=-np.inf)
            idx_np = np.pad(idx_np, ((0, 0), (0, k - kk)), constant_values=EMPTY)
        run_s, run_i = _merge_dense(run_s, run_i, vals_np, idx_np, k)
    return run_s, run_i, leaks


def _n_blocks(pool: PoolIndex, block_size: int) -> int:
    return sum(math.ceil(f.count / block_size) for f in pool.files)


def search_topk(
    queries: np.ndarray,
    pool: PoolIndex,
    k: int,
    max_similarity: float | None = None,
    block_size: int = 65536,
    backend: str = "auto",
    progress: bool = False,
) -> TopK:
    """Exact top-``k`` pool positions per query by inner product, streamed block by block.

    Pairs scoring above ``max_similarity`` are dropped (and counted) before the top-k is taken; ties
    are broken by pool position, so the result equals a sorted brute force on (-score, position).
    Refuses a non-positive ``k`` or ``block_size`` and mismatched dimensions.
    """
    if k < 1 or block_size < 1:
        raise ValueError(f"top_k and block_size must be >= 1 (got {k}, {block_size})")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != pool.dim:
        raise ValueError(f"queries of shape {queries.shape} do not match pool vectors of dimension {pool.dim}")
    max_sim = math.inf if max_similarity is None else float(max_similarity)
    name, device = resolve_backend(backend)
    if name == "torch":
        s, i, leaks = _torch_search(queries, pool, k, max_sim, block_size, device, progress)
    else:
        s, i, leaks = _numpy_search(queries, pool, k, max_sim, block_size, progress)
    return TopK(s, i, leaks.counts, leaks.pairs, pool.size - pool.n_duplicates)


@dataclass
class MeanScores:
    """train_topk_mean candidates per subject, best first, and the counts behind them."""

    score: list[np.ndarray]
    index: list[np.ndarray]
    query: list[np.ndarray]  # best-matching question of each candidate
    best: list[np.ndarray]  # its similarity
    seen: np.ndarray  # pool samples whose best question is in the subject
    leaks: np.ndarray  # of those, samples with a question above max_similarity
    below: np.ndarray  # of the rest, samples scoring under the threshold
    passed: np.ndarray  # samples at or above the threshold
    leak_pairs: list[tuple[int, int, float]]


def score_topk_mean(
    queries: np.ndarray,
    query_subject: np.ndarray,
    n_subjects: int,
    pool: PoolIndex,
    m: int,
    keep: int,
    threshold: float,
    max_similarity: float | None = None,
    block_size: int = 65536,
    progress: bool = False,
) -> MeanScores:
    """Score every pool sample by the mean of its ``m`` highest question similarities.

    A sample with any question above ``max_similarity`` is a probable leak and is dropped. Each
    sample is credited to the subject of its best question; per subject the ``keep`` best samples at
    or above ``threshold`` are returned, ordered by (-score, position).
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    Q = len(queries)
    m = max(1, min(m, Q))
    max_sim = math.inf if max_similarity is None else float(max_similarity)
    query_subject = np.asarray(query_subject, dtype=np.int64)
    run = [
        (np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
        for _ in range(n_subjects)
    ]
    seen, leaks_n, below, passed = (np.zeros(n_subjects, np.int64) for _ in range(4))
    leaks = _Leaks(Q)
    for start, raw, dup in tqdm(
        pool.blocks(block_size), total=_n_blocks(pool, block_size), desc="score", unit="block", disable=not progress
    ):
        S = queries @ np.asarray(raw, dtype=np.float32).T
        best_q = S.argmax(axis=0)
        best = S[best_q, np.arange(S.shape[1])]
        subj = query_subject[best_q]
        hot = S > max_sim
        leak_col = hot.any(axis=0) & ~dup
        if leak_col.any():
            r, c = np.nonzero(hot[:, leak_col])
            cols = np.flatnonzero(leak_col)[c]
            leaks.add(r, cols + start, S[r, cols])
        score = np.partition(S, Q - m, axis=0)[Q - m :].mean(axis=0) if m < Q else S.mean(axis=0)
        valid = ~dup
        seen += np.bincount(subj[valid], minlength=n_subjects)
        leaks_n += np.bincount(subj[leak_col], minlength=n_subjects)
        ok = valid & ~leak_col
        good = ok & (score >= threshold)
        below += np.bincount(subj[ok & ~good], minlength=n_subjects)
        passed += np.bincount(subj[good], minlength=n_subjects)
        for s in range(n_subjects):
            cols = np.flatnonzero(good & (subj == s))
            rs, ri, rq, rb = run[s]
            if len(rs) >= keep:  # only scores beating the current keep-th can enter
                cols = cols[score[cols] > rs[-1]]
            if not len(cols):
                continue
            cs = np.concatenate([rs, score[cols].astype(np.float32)])
            ci = np.concatenate([ri, cols + start])
            order = np.lexsort((ci, -cs))[:keep]
            run[s] = (
                cs[order],
                ci[order],
                np.concatenate([rq, best_q[cols]])[order],
                np.concatenate([rb, best[cols]])[order],
            )
    return MeanScores(
        [r[0] for r in run],
        [r[1] for r in run],
        [r[2] for r in run],
        [r[3] for r in run],
        seen,
        leaks_n,
        below,
        passed,
        leaks.pairs,
    )


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

    def load(self, positions: list[int]) -> None:
        new = [p for p in dict.fromkeys(positions) if p not in self.records]
        if not new:
            return
        self.records.update(self.pool.fetch(new, progress=self.progress))
        if self.queries is None and self.near_dup is None:
            self.loaded.extend(new)
            return
        nv = self.pool.gather(new)
        if self.queries is not None:
            for lo in range(0, len(new), 4096):
                top = (nv[lo : lo + 4096] @ self.queries.T).max(axis=1)
                self.leaky.update(new[lo + j] for j in np.flatnonzero(top > self.max_similarity))
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
            hits = self.guard.check(leak.sample_segments(rec))
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


def load_queries(vector_paths: list, items: list[leak.BenchmarkItem]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(query ids, subject index per query, float32 matrix)`` of the benchmark question vectors.

    Refuses ids absent from the benchmark records (stale vectors) and mismatched dimensions.
    """
    known = {it.id for it in items}
    ids, subj, mats = [], [], []
    for s, path in enumerate(vector_paths):
        qids, mat = load_vectors(path, mmap=False)
        for line, qid in enumerate(qids, start=1):
            if qid not in known:
                raise InputError(
                    ids_path(path), line, "id", f"question {qid!r} is not in the benchmark records: vectors are stale"
                )
        if mats and mat.shape[1] != mats[0].shape[1]:
            raise InputError(
                path, None, None, f"dimension {mat.shape[1]} differs from {mats[0].shape[1]} of {vector_paths[0]}"
            )
        ids += qids
        subj += [s] * len(qids)
        mats.append(np.asarray(mat, dtype=np.float32))
    return ids, np.array(subj, dtype=np.int64), np.concatenate(mats) if mats else np.zeros((0, 0), np.float32)


def run_recall(*, gpus: int = 0, backend: str = "auto", **settings) -> dict:
    """:func:`recall_job` holding ``gpus`` GPUs (evalsel.gpu.claim) unless the backend is numpy:
    on CUDA the torch backend computes on a device the scheduler gave this job, never on one
    another job holds."""
    from .gpu import claim

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
    strategy: str = "per_query_topk",
    top_k: int = 20,
    similarity_threshold: float = 0.5,
    max_similarity: float | None = 0.95,
    topk_mean_m: int = 3,
    budget: int | None = None,
    per_subject_quota: bool = True,
    near_duplicate_threshold: float | None = None,
    block_size: int = 65536,
    leak_guard: dict | None = None,
    backend: str = "auto",
    progress: bool = True,
) -> dict:
    """Recall pool samples for each subject's questions and write the per-subject files, statistics
    and histogram. Returns the statistics.

    Order of filters: max_similarity (before the top-k), top_k, similarity_threshold, cross-question
    dedup (best match wins), then in selection order the n-gram guard, exact-text dedup,
    near-duplicates and the budget (round-robin over subjects when ``per_subject_quota``).
    Records: ``rank`` is the 1-based position in the subject file; per_query_topk adds
    ``query_rank`` (position in the question's top-k), train_topk_mean adds ``best_similarity``
    (``similarity`` is then the mean over the ``topk_mean_m`` best questions).
    Refuses an unknown strategy, a missing budget for train_topk_mean and mismatched input lists.
    """
    t0 = time.monotonic()
    if strategy not in STRATEGIES:
        raise ValueError(f"recall.strategy must be one of {STRATEGIES}, got {strategy!r}")
    if strategy == "train_topk_mean" and budget is None:
        raise ValueError("recall.budget is required by strategy train_topk_mean")
    if not (len(subjects) == len(query_vectors) == len(recall_outputs)):
        raise ValueError(
            f"{len(subjects)} subjects, {len(query_vectors)} query vector files, {len(recall_outputs)} outputs"
        )
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
    lists: list[list[Candidate]] = [[] for _ in range(S)]

    if strategy == "per_query_topk":
        res = search_topk(queries, pool, top_k, max_similarity, block_size, backend, progress)
        finite = np.isfinite(res.scores)
        passed = finite & (res.scores >= similarity_threshold)
        qq, rr = np.nonzero(passed)
        ss, gg = res.scores[qq, rr], res.index[qq, rr]
        # A sample recalled by several questions is credited to its best match (then lowest question).
        order = np.lexsort((qq, -ss, gg))
        first = np.ones(len(order), dtype=bool)
        first[1:] = gg[order][1:] != gg[order][:-1]
        dup_by_subject = np.bincount(qsub[qq[order[~first]]], minlength=S)
        for s in range(S):
            sq = qsub == s
            stats[s].update(
                candidates_seen=int(sq.sum()) * res.scanned,
                dropped_max_similarity=int(res.leaks[sq].sum()),
                recalled=int(finite[sq].sum()),
                dropped_threshold=int((finite & ~passed)[sq].sum()),
                dropped_duplicate=int(dup_by_subject[s]),
            )
        for j in order[first]:
            q = int(qq[j])
            lists[qsub[q]].append(Candidate(float(ss[j]), int(gg[j]), q, int(qsub[q]), {"query_rank": int(rr[j]) + 1}))
        leak_pairs = res.leak_pairs
        leak_total = int(res.leaks.sum())
    else:
        keep = 2 * budget  # headroom for samples the guard and dedup drop after scoring
        ms = score_topk_mean(
            queries, qsub, S, pool, topk_mean_m, keep, similarity_threshold, max_similarity, block_size, progress
        )
        for s in range(S):
            stats[s].update(
                candidates_seen=int(ms.seen[s]),
                dropped_max_similarity=int(ms.leaks[s]),
                recalled=int(ms.passed[s] + ms.below[s]),
                dropped_threshold=int(ms.below[s]),
                dropped_duplicate=0,
            )
            for sc, g, q, b in zip(
                ms.score[s].tolist(), ms.index[s].tolist(), ms.query[s].tolist(), ms.best[s].tolist()
            ):
                lists[s].append(Candidate(sc, g, q, s, {"best_similarity": round(b, 6)}))
        leak_pairs = ms.leak_pairs
        leak_total = int(ms.leaks.sum())
    for s in range(S):
        lists[s].sort(key=lambda c: (-c.score, c.position))
        stats[s]["unique"] = len(lists[s]) if strategy == "per_query_topk" else int(ms.passed[s])

    selector = _Selector(pool, guard, near_duplicate_threshold, progress, queries, max_similarity)
    kept = _walk(lists, selector, items, budget, per_subject_quota and budget is not None, drops)

    per_subject: list[list[Candidate]] = [[] for _ in range(S)]
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
    overall = {k: sum(st[k] for st in stats) for k in stats[0] if k not in ("similarity", "dropped_guard")}
    overall["dropped_guard"] = {k: sum(st["dropped_guard"][k] for st in stats) for k in GUARD_REASONS}
    overall["similarity"] = _sim_summary([c.score for c in kept])
    statistics = {
        "strategy": strategy,
        "settings": {
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
        },
        "pool": {"vectors": pool.size, "repeated_ids": pool.n_duplicates, "files": len(pool.files), "dim": pool.dim},
        "benchmark_items_guarded": len(items),
        "benchmark_items_too_short_for_ngram": guard.too_short_for_ngram,
        "subjects": dict(zip(subjects, stats)),
        "overall": overall,
        "max_similarity_drops": {
            "total_pairs": leak_total,
            "recorded": [
                {"query_id": qids[q], "sample_id": pool.ids[p], "similarity": round(v, 6)} for q, p, v in leak_pairs
            ],
        },
        "guard_drops": selector.guard_drops,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, statistics)
    plot_histogram(histogram_path, subjects, hist_values, similarity_threshold, max_similarity)
    log.info(
        "recall: kept %d samples (%s) in %.1f s",
        overall["kept"],
        ", ".join(f"{s}: {st['kept']}" for s, st in zip(subjects, stats)),
        statistics["seconds"],
    )
    return statistics
