"""Recall speed: the project's streamed exact top-k against the seed's Python loop and a bare numpy
matmul + argpartition, on the same random normalised vectors; then a 2M-vector fp16 pool run in a
subprocess (peak RSS from getrusage).

    python perf/bench_recall.py                 # 1,000 x 100,000 and 1,000 x 2,000,000, 384-d
    python perf/bench_recall.py --big 0         # skip the 2M run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from evalsel.core.vectors import save_vectors  # noqa: E402
from evalsel.data.poolindex import PoolIndex  # noqa: E402
from evalsel.select.kernels import search_topk  # noqa: E402


def random_unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    m = rng.standard_normal((n, dim), dtype=np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def write_shards(directory: Path, mat_or_none, n: int, dim: int, shard: int, dtype: str, seed: int) -> list[Path]:
    """Pool shards as the workflow writes them (vectors + ids); rows generated per shard when no matrix."""
    rng = np.random.default_rng(seed)
    files = []
    for s, lo in enumerate(range(0, n, shard)):
        hi = min(lo + shard, n)
        block = mat_or_none[lo:hi] if mat_or_none is not None else random_unit(rng, hi - lo, dim)
        path = directory / "bench" / f"shard-{s:05d}.npy"
        save_vectors(path, [f"{i:016x}" for i in range(lo, hi)], block, dtype=dtype)
        files.append(path)
    return files


def seed_recall(queries: list, pool: list, k: int) -> list:
    """The seed's algorithm: vectors as JSON-loaded Python lists, one cosine per pair, sort per question."""
    out = []
    for q in queries:
        qn = math.sqrt(sum(x * x for x in q))
        sims = []
        for j, p in enumerate(pool):
            dot = sum(a * b for a, b in zip(q, p))
            sims.append((dot / (qn * math.sqrt(sum(x * x for x in p))), j))
        sims.sort(reverse=True)
        out.append(sims[:k])
    return out


def big_child(files_json: str, queries_npy: str, k: int, block: int) -> None:
    files = json.loads(files_json)
    q = np.load(queries_npy)
    t0 = time.perf_counter()
    pool = PoolIndex(files)
    t1 = time.perf_counter()
    res = search_topk(q, pool, k, 0.95, block, "numpy")
    t2 = time.perf_counter()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "index_s": t1 - t0,
                "search_s": t2 - t1,
                "total_s": t2 - t0,
                "peak_rss_mb": rss_mb,
                "pool": pool.size,
                "finite": int(np.isfinite(res.scores).sum()),
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--block", type=int, default=65536)
    ap.add_argument("--seed-pairs", type=int, default=20_000, help="(question, sample) pairs timed for the seed's loop")
    ap.add_argument("--big", type=int, default=2_000_000, help="fp16 pool size of the memory run (0: skip)")
    ap.add_argument("--shard", type=int, default=50_000)
    ap.add_argument("--tmp", default=None, help="directory for the temporary shards (default: system temp)")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        big_child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]))
        return

    print(
        f"cores {os.cpu_count()}, load average at start {os.getloadavg()}, "
        f"threads OMP={os.environ.get('OMP_NUM_THREADS', 'default')}"
    )
    rng = np.random.default_rng(0)
    Q = random_unit(rng, args.queries, args.dim)
    P = random_unit(rng, args.pool, args.dim)
    tmp = Path(tempfile.mkdtemp(prefix="bench_recall_", dir=args.tmp))
    try:
        files = write_shards(tmp / "small", P, args.pool, args.dim, args.shard, "float32", 0)

        # 1. the project's recall step (pool index from the shard files + streamed exact search)
        t0 = time.perf_counter()
        pool = PoolIndex(files)
        res = search_topk(Q, pool, args.k, 0.95, args.block, "numpy")
        t_project = time.perf_counter() - t0

        # 3. the floor: one matmul and one argpartition over the whole matrix in memory
        t0 = time.perf_counter()
        S = Q @ P.T
        part = np.argpartition(S, S.shape[1] - args.k, axis=1)[:, -args.k :]
        vals = np.take_along_axis(S, part, axis=1)
        top = np.take_along_axis(part, np.argsort(-vals, axis=1), axis=1)
        t_floor = time.perf_counter() - t0
        same = np.mean([set(top[i]) == set(res.index[i]) for i in range(len(Q))])
        del S, part

        # 2. the seed's loop on a subset of pairs, extrapolated linearly
        nq = max(1, min(len(Q), 20))
        npool = max(1, args.seed_pairs // nq)
        qj, pj = json.loads(json.dumps(Q[:nq].tolist())), json.loads(json.dumps(P[:npool].tolist()))
        t0 = time.perf_counter()
        seed_recall(qj, pj, args.k)
        t_sub = time.perf_counter() - t0
        per_pair = t_sub / (nq * npool)
        t_seed = per_pair * args.queries * args.pool

        print(f"\n{args.queries:,} queries x {args.pool:,} pool vectors, {args.dim}-d, top-{args.k}")
        print(
            f"  project recall step : {t_project:8.2f} s   (top-k sets equal to the floor's for {same:.1%} of queries)"
        )
        print(
            f"  seed Python loop    : {t_seed:8.0f} s   (extrapolated from {nq * npool:,} pairs at {per_pair * 1e6:.1f} us/pair)"
        )
        print(f"  numpy floor         : {t_floor:8.2f} s")
        print(f"  speed-up vs seed    : {t_seed / t_project:8.0f} x   (target >= 500)")
        print(f"  ratio to floor      : {t_project / t_floor:8.2f} x   (target <= 2)")

        if args.big:
            big_files = write_shards(tmp / "big", None, args.big, args.dim, args.shard, "float16", 1)
            qpath = tmp / "queries.npy"
            np.save(qpath, Q)
            size_gb = sum(f.stat().st_size for f in big_files) / 1e9
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    json.dumps([str(f) for f in big_files]),
                    str(qpath),
                    str(args.k),
                    str(args.block),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"\n{args.queries:,} queries x {r['pool']:,} fp16 vectors ({size_gb:.2f} GB in {len(big_files)} shards)"
            )
            print(f"  pool index (ids)    : {r['index_s']:8.2f} s")
            print(f"  streamed search     : {r['search_s']:8.2f} s")
            print(f"  total               : {r['total_s']:8.2f} s   (target < 120)")
            print(f"  peak RSS            : {r['peak_rss_mb']:8.0f} MB  (target < 6000)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nload average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()
