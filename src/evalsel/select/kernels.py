"""Similarity kernels over the pool's vectors, streamed block by block with bounded memory: exact
per-query top-k (numpy or torch), the train_topk_mean scores, and the per-subject maximum of RDS+."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from evalsel.core.settings import default
from evalsel.data.poolindex import PoolIndex

BACKENDS = ("auto", "numpy", "torch")
# Slot filler of the running top-k: sorts after every real pool position.
EMPTY = np.iinfo(np.int64).max
# (question, sample) pairs above max_similarity kept by name for the contamination report.
MAX_RECORDED_LEAKS = 20000


def _blocks(pool: PoolIndex, block_size: int, desc: str, progress: bool):
    """``pool.blocks(block_size)``, with a progress bar when asked (tqdm is imported only then)."""
    blocks = pool.blocks(block_size)
    if not progress:
        return blocks
    from tqdm import tqdm

    return tqdm(blocks, total=_n_blocks(pool, block_size), desc=desc, unit="block")


def _usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask on Linux; os.cpu_count() elsewhere)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
    """Counts of (query, sample) pairs above max_similarity, and the first MAX_RECORDED_LEAKS of them
    in pool order (by position, then query), whatever order the search finds them in."""

    def __init__(self, n_queries: int):
        self.counts = np.zeros(n_queries, dtype=np.int64)
        self._pairs: list[tuple[int, int, float]] = []

    def add(self, rows: np.ndarray, positions: np.ndarray, values: np.ndarray) -> None:
        if not len(rows):
            return
        self.counts += np.bincount(rows, minlength=len(self.counts))
        self._pairs.extend(zip(rows.tolist(), positions.tolist(), values.astype(float).tolist()))
        if len(self._pairs) > 2 * MAX_RECORDED_LEAKS:
            self._pairs = self.pairs

    @property
    def pairs(self) -> list[tuple[int, int, float]]:
        return sorted(self._pairs, key=lambda t: (t[1], t[0]))[:MAX_RECORDED_LEAKS]

    def absorb(self, other: _Leaks) -> None:
        """Add the counts and pairs of another worker's search over the same queries."""
        self.counts += other.counts
        self._pairs.extend(other.pairs)
        self._pairs = self.pairs


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


def _numpy_block(S, start, run_s, run_i, k, max_sim, leaks):
    """Merge one score block (columns from pool position ``start``) into the running top-k."""
    Q, b = S.shape
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
        return _merge_dense(run_s, run_i, vals, idx, k)
    if n:
        r, c = np.nonzero(mask)
        v = S[r, c]
        hot = v > max_sim
        if hot.any():
            leaks.add(r[hot], c[hot] + start, v[hot])
            r, c, v = r[~hot], c[~hot], v[~hot]
        return _merge_sparse(run_s, run_i, r, c + start, v, k)
    return run_s, run_i


# Scores are computed this many pool columns at a time, into one score buffer per worker reused from
# chunk to chunk: the compare and gather then run on a matrix still in cache, no block-sized score
# matrix is held and no fresh memory is faulted in per chunk.
CHUNK_COLUMNS = 2048
_HALF_MAGNITUDE, _HALF_SIGN, _HALF_INF = np.uint32(0x7FFF), np.uint32(0x8000), np.uint32(0x7C00 << 13)


def _to_float32(raw: np.ndarray, out: np.ndarray, tmp: np.ndarray) -> None:
    """``out[:] = raw`` as float32. float16 rows go by their bits (magnitude shifted into a float32
    and scaled by 2**112, the sign put back): exact for zeros, subnormals and normals, and about twice
    as fast as numpy's cast; a chunk holding an inf or a NaN takes numpy's cast."""
    if raw.dtype != np.float16:
        np.copyto(out, raw, casting="unsafe")
        return
    u = out.view(np.uint32)
    np.copyto(u, raw.view(np.uint16), casting="unsafe")
    np.bitwise_and(u, _HALF_SIGN, out=tmp)
    np.left_shift(tmp, 16, out=tmp)
    np.bitwise_and(u, _HALF_MAGNITUDE, out=u)
    np.left_shift(u, 13, out=u)
    if u.max(initial=0) >= _HALF_INF:
        np.copyto(out, raw, casting="unsafe")
        return
    np.multiply(out, np.float32(2.0**112), out=out)
    np.bitwise_or(u, tmp, out=u)


class _ChunkSearch:
    """The running top-k of every query over one worker's share of the pool's chunks."""

    def __init__(self, queries: np.ndarray, k: int, max_sim: float, width: int):
        Q, dim = queries.shape
        self.queries, self.k, self.max_sim = queries, k, max_sim
        self.run_s = np.full((Q, k), -np.inf, dtype=np.float32)
        self.run_i = np.full((Q, k), EMPTY, dtype=np.int64)
        self.leaks = _Leaks(Q)
        self.seeded = False
        self.s_buf = np.empty(Q * width, dtype=np.float32)  # a chunk's scores, (Q, w) in the first Q * w
        self.m_buf = np.empty(Q * width, dtype=bool)
        self.x_buf = np.empty((width, dim), dtype=np.float32)  # the chunk's rows as float32
        self.t_buf = np.empty((width, dim), dtype=np.uint32)
        self.held: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # candidates not merged yet
        self.n_held = 0

    def run(self, pool: PoolIndex, block_size: int, worker: int, n_workers: int, progress: bool) -> None:
        """Score chunks ``worker``, ``worker + n_workers``, ... of the pool, in pool order."""
        i = 0
        for start, raw, dup in _blocks(pool, block_size, "recall", progress and worker == 0):
            for lo in range(0, len(raw), CHUNK_COLUMNS):
                if i % n_workers == worker:
                    hi = min(len(raw), lo + CHUNK_COLUMNS)
                    self.step(raw[lo:hi], start + lo, dup[lo:hi])
                i += 1
        self.merge_held()

    def step(self, raw: np.ndarray, start: int, dup: np.ndarray) -> None:
        """Merge the chunk ``raw`` (rows as stored, from pool position ``start``) into the top-k."""
        Q, w = len(self.queries), len(raw)
        x = self.x_buf[:w]
        _to_float32(raw, x, self.t_buf[:w])
        S = self.s_buf[: Q * w].reshape(Q, w)
        np.matmul(self.queries, x.T, out=S)
        if dup.any():
            S[:, dup] = -np.inf
        if not self.seeded:  # the first columns are taken densely: every row gets a running k-th
            self.run_s, self.run_i = _numpy_block(S, start, self.run_s, self.run_i, self.k, self.max_sim, self.leaks)
            self.seeded = bool(np.isfinite(self.run_s[:, -1]).all())
            return
        # only scores above the row's current k-th can enter (equal ones lose the tie to earlier
        # positions); leaks sit above it too, since the top-k holds no leak
        mask = self.m_buf[: Q * w].reshape(Q, w)
        np.greater(S, self.run_s[:, -1:], out=mask)
        r, c = np.divmod(np.flatnonzero(mask), w)  # a flat bool nonzero: ten times a 2-d one
        if len(r) * 16 > S.size:  # most of the chunk enters: take its top-k densely now
            self.merge_held()
            self.run_s, self.run_i = _numpy_block(S, start, self.run_s, self.run_i, self.k, self.max_sim, self.leaks)
        elif len(r):
            self.held.append((r, c + start, S[r, c]))
            self.n_held += len(r)
            if self.n_held >= Q * self.k:  # merged once they outnumber the top-k: the k-th tightens
                self.merge_held()

    def merge_held(self) -> None:
        if not self.held:
            return
        r, c, v = (np.concatenate(a) for a in zip(*self.held))
        self.held, self.n_held = [], 0
        hot = v > self.max_sim
        if hot.any():
            self.leaks.add(r[hot], c[hot], v[hot])
            r, c, v = r[~hot], c[~hot], v[~hot]
        self.run_s, self.run_i = _merge_sparse(self.run_s, self.run_i, r, c, v, self.k)


def _numpy_search(queries, pool, k, max_sim, block_size, progress, threads):
    """The pool's chunks are dealt round-robin to ``threads`` workers, each with a one-thread BLAS
    (no thread of a multi-threaded BLAS spins idle through the compare and gather passes) and its
    own running top-k of every query; the workers' top-k are merged at the end."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    n_chunks = sum(
        math.ceil(min(block_size, f.count - lo) / CHUNK_COLUMNS)
        for f in pool.files
        for lo in range(0, f.count, block_size)
    )
    n = max(1, min(threads, n_chunks))
    workers = [_ChunkSearch(queries, k, max_sim, CHUNK_COLUMNS) for _ in range(n)]
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(n) as ex:
        for f in [ex.submit(wk.run, pool, block_size, j, n, progress) for j, wk in enumerate(workers)]:
            f.result()
    run_s, run_i, leaks = workers[0].run_s, workers[0].run_i, _Leaks(len(queries))
    for wk in workers:
        if wk is not workers[0]:
            run_s, run_i = _merge_dense(run_s, run_i, wk.run_s, wk.run_i, k)
        leaks.absorb(wk.leaks)
    return run_s, run_i, leaks


def _torch_search(queries, pool, k, max_sim, block_size, device, progress):
    import torch

    Q = len(queries)
    qt = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)).to(device)
    run_s = np.full((Q, k), -np.inf, dtype=np.float32)
    run_i = np.full((Q, k), EMPTY, dtype=np.int64)
    leaks = _Leaks(Q)
    for start, raw, dup in _blocks(pool, block_size, "recall", progress):
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
    block_size: int = default("recall.block_size"),
    backend: str = default("recall.backend"),
    progress: bool = False,
    threads: int | None = None,
) -> TopK:
    """Exact top-``k`` pool positions per query by inner product, streamed block by block.

    Pairs scoring above ``max_similarity`` are dropped (and counted) before the top-k is taken; ties
    are broken by pool position, so the result equals a sorted brute force on (-score, position).
    The numpy backend computes with ``threads`` worker threads (default: every CPU this process may
    use). Refuses a non-positive ``k`` or ``block_size`` and mismatched dimensions.
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
        threads = threads or _usable_cpus()
        s, i, leaks = _numpy_search(queries, pool, k, max_sim, block_size, progress, threads)
    return TopK(s, i, leaks.counts, leaks.pairs, pool.size - pool.n_duplicates)


def _leak_columns(S: np.ndarray, dup: np.ndarray, max_sim: float, start: int, leaks: _Leaks) -> np.ndarray:
    """Pool columns of a score block above ``max_sim`` with some question (repeated ids aside):
    probable copies, never candidates; their pairs are recorded in ``leaks``."""
    hot = S > max_sim
    leak_col = hot.any(axis=0) & ~dup
    if leak_col.any():
        r, c = np.nonzero(hot[:, leak_col])
        cols = np.flatnonzero(leak_col)[c]
        leaks.add(r, cols + start, S[r, cols])
    return leak_col


def _keep_best(run: tuple, scores: np.ndarray, cols: np.ndarray, start: int, keep: int, extra: list) -> tuple:
    """The running best ``keep`` entries by (-score, position), with a block's candidate columns
    ``cols`` merged in. ``run`` is (scores, positions, *per-entry arrays); ``extra`` holds the
    candidates' per-entry arrays, aligned with ``cols``."""
    rs, ri, *rx = run
    if len(rs) >= keep:  # only scores beating the current keep-th can enter
        better = scores[cols] > rs[-1]
        cols, extra = cols[better], [e[better] for e in extra]
    if not len(cols):
        return run
    cs = np.concatenate([rs, scores[cols].astype(np.float32)])
    ci = np.concatenate([ri, cols + start])
    order = np.lexsort((ci, -cs))[:keep]
    return (cs[order], ci[order], *[np.concatenate([r, e])[order] for r, e in zip(rx, extra)])


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
    block_size: int = default("recall.block_size"),
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
    for start, raw, dup in _blocks(pool, block_size, "score", progress):
        S = queries @ np.asarray(raw, dtype=np.float32).T
        best_q = S.argmax(axis=0)
        best = S[best_q, np.arange(S.shape[1])]
        subj = query_subject[best_q]
        leak_col = _leak_columns(S, dup, max_sim, start, leaks)
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
            run[s] = _keep_best(run[s], score, cols, start, keep, [best_q[cols], best[cols]])
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


@dataclass
class SubjectMax:
    """Per subject, the ``keep`` pool samples with the highest maximum similarity to the subject's
    questions, best first, with the question reaching it; and the counts behind them."""

    score: list[np.ndarray]
    index: list[np.ndarray]
    query: list[np.ndarray]
    scanned: int  # pool samples scored (repeated ids excluded)
    leaks: int  # of those, samples above max_similarity with some question (never candidates)
    below: np.ndarray  # per subject, samples scoring under the threshold
    leak_pairs: list[tuple[int, int, float]]


def score_subject_max(
    queries: np.ndarray,
    query_subject: np.ndarray,
    n_subjects: int,
    pool: PoolIndex,
    keep: int,
    threshold: float = -math.inf,
    max_similarity: float | None = None,
    block_size: int = default("recall.block_size"),
    progress: bool = False,
) -> SubjectMax:
    """RDS+ scores (Ivison et al. 2025, the "max" reduction within a task): per subject, a pool
    sample scores the maximum inner product with any of the subject's questions; the ``keep`` best
    per subject are returned ordered by (-score, position). A sample appears in every subject's
    ranking (round-robin over subjects then takes each once). Samples above ``max_similarity`` with
    any question are dropped and counted first."""
    if keep < 1 or block_size < 1:
        raise ValueError(f"keep and block_size must be >= 1 (got {keep}, {block_size})")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != pool.dim:
        raise ValueError(f"queries of shape {queries.shape} do not match pool vectors of dimension {pool.dim}")
    query_subject = np.asarray(query_subject, dtype=np.int64)
    max_sim = math.inf if max_similarity is None else float(max_similarity)
    rows = [np.flatnonzero(query_subject == s) for s in range(n_subjects)]
    run = [(np.empty(0, np.float32), np.empty(0, np.int64), np.empty(0, np.int64)) for _ in range(n_subjects)]
    below = np.zeros(n_subjects, np.int64)
    leaks = _Leaks(len(queries))
    n_leaks = 0
    for start, raw, dup in _blocks(pool, block_size, "score", progress):
        S = queries @ np.asarray(raw, dtype=np.float32).T
        leak_col = _leak_columns(S, dup, max_sim, start, leaks)
        n_leaks += int(leak_col.sum())
        ok = ~dup & ~leak_col
        for s, qr in enumerate(rows):
            if not len(qr):
                continue
            sub = S[qr]
            arg = sub.argmax(axis=0)
            best = sub[arg, np.arange(S.shape[1])]
            good = ok & (best >= threshold)
            below[s] += int((ok & ~good).sum())
            cols = np.flatnonzero(good)
            run[s] = _keep_best(run[s], best, cols, start, keep, [qr[arg[cols]]])
    return SubjectMax(
        [r[0] for r in run],
        [r[1] for r in run],
        [r[2] for r in run],
        pool.size - pool.n_duplicates,
        n_leaks,
        below,
        leaks.pairs,
    )
