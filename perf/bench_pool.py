"""pool_prepare and sft_build at the default pool's size, beside a plain `datasets` JSON load.

Generates (not committed) a JSON-lines file of N alpaca records with realistic Chinese medical
lengths (instruction ~35 characters, output ~250, log-normal; a few duplicates and too-short
records as in real pools), then runs each step in a fresh child process and prints wall time,
records/s and peak RSS side by side:

    python perf/bench_pool.py                      # 2,000,000 records in /tmp/evalsel_bench_pool
    python perf/bench_pool.py --n 200000 --keep    # smaller; keep the files for a rerun

1. ``datasets.load_dataset("json", data_files=..., split="train")`` (Arrow conversion + cache),
2. ``evalsel.data.pool.run_pool_prepare`` (normalise, hash ids, deduplicate, shard),
3. ``evalsel.sets.build.build_sft`` drawing the random mix and the random arm from that pool (2,000
   recalled samples, 64-d random vectors standing in for the embeddings, 300 benchmark items).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Common characters of Chinese medical text (written for this script).
CHARS = (
    "患者男性女性岁主诉反复咳嗽发热头痛腹痛胸闷气短恶心呕吐腹泻便秘乏力头晕心悸失眠食欲不振体重下降"
    "血压血糖血脂尿酸肝功能肾功能心电图超声检查治疗药物剂量服用每日次饭后注意休息饮食清淡多喝水复查"
    "医生建议您情况可能是由于引起的需要进一步明确诊断如果症状加重请及时就医不要自行停药观察感染炎症"
    "慢性急性高血压糖尿病冠心病哮喘肺炎胃炎肝炎肾炎贫血甲状腺关节颈椎腰椎皮肤过敏湿疹儿童孕妇老年人"
    "，。？！、；："
)


def generate(path: Path, n: int, seed: int = 0) -> int:
    import numpy as np

    rng = np.random.default_rng(seed)
    chars = np.array(list(CHARS))
    q_len = np.clip(rng.lognormal(np.log(30), 0.5, n), 2, 400).astype(int)
    a_len = np.clip(rng.lognormal(np.log(220), 0.6, n), 1, 3000).astype(int)
    size = 0
    with open(path, "w", encoding="utf-8") as fh:
        block = 20000
        for start in range(0, n, block):
            lines = []
            for i in range(start, min(n, start + block)):
                if i % 500 == 7 and i > 10:  # an exact duplicate of an earlier record
                    lines.append(lines[-1] if lines else "")
                    continue
                q = "".join(rng.choice(chars, q_len[i]))
                a = "".join(rng.choice(chars, a_len[i]))
                lines.append(json.dumps({"instruction": q, "input": "", "output": a}, ensure_ascii=False))
            text = "\n".join(x for x in lines if x) + "\n"
            fh.write(text)
            size += len(text.encode())
    return size


def generated(work: Path, n: int) -> Path:
    """The generated pool of ``n`` records in ``work`` (written once, kept across runs with --keep)."""
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"pool_{n}.jsonl"
    if not src.exists():
        t0 = time.monotonic()
        size = generate(src, n)
        print(f"generated {n:,} records ({size / 1e9:.2f} GB) in {time.monotonic() - t0:.0f} s: {src}")
    return src


CHILD = {
    "datasets": """
import datasets, sys
ds = datasets.load_dataset("json", data_files=sys.argv[1], split="train", cache_dir=sys.argv[2])
print(len(ds))
""",
    "pool_prepare": """
import sys
from evalsel.data.pool import run_pool_prepare
m = run_pool_prepare(sys.argv[2], "bench", path=sys.argv[1], shard_size=50000, max_chars=512)
print(m["statistics"]["read"])
""",
    "sft_build": """
import sys
from evalsel.sets.build import build_sft
d = sys.argv[2]
import json
args = json.load(open(d + "/sft_inputs.json"))
st = build_sft(**args, progress=False)
print(sum(a["samples"] for a in st["arms"].values()))
""",
}


def run_child(name: str, *args: str, children: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, stdout's last line) of one step (``children[name]``, by default
    this script's) in a fresh interpreter."""
    code = (
        f"import os, resource, sys, time\nsys.path.insert(0, {str(REPO / 'src')!r})\nt0 = time.monotonic()\n"
        + (children or CHILD)[name]
        + "\nprint('SECONDS', time.monotonic() - t0)\n"
        + "print('RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if line.startswith(("SECONDS", "RSS_MB")))
    result = [line for line in proc.stdout.splitlines() if not line.startswith(("SECONDS", "RSS_MB"))][-1]
    return float(out["SECONDS"]), float(out["RSS_MB"]), result


def sft_inputs(work: Path, pool_dir: Path, n_recalled: int = 2000, n_items: int = 300, dim: int = 64) -> None:
    """Benchmark items, their vectors, pool vectors per shard and recall files for build_sft."""
    import numpy as np

    from evalsel.core.vectors import save_vectors

    rng = np.random.default_rng(1)
    manifest = json.loads((pool_dir / "manifest.json").read_text(encoding="utf-8"))
    bench = work / "benchmark" / "physician.jsonl"
    bench.parent.mkdir(parents=True, exist_ok=True)
    chars = np.array(list(CHARS))
    items = []
    for i in range(n_items):
        q = "".join(rng.choice(chars, int(rng.integers(8, 40))))
        items.append(
            {
                "id": f"physician/val/{i}",
                "subject": "physician",
                "split": "val",
                "question": q,
                "choices": ["".join(rng.choice(chars, 4)) for _ in range(4)],
                "answer": "A",
                "explanation": "",
            }
        )
    bench.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items), encoding="utf-8")
    qvec = work / "vectors" / "physician.npy"
    save_vectors(qvec, [r["id"] for r in items], rng.standard_normal((n_items, dim)).astype(np.float32))
    shards, vectors, all_ids = [], [], []
    for shard in manifest["shards"]:
        path = pool_dir / f"{shard}.jsonl"
        ids = [json.loads(line)["id"] for line in path.open(encoding="utf-8")]
        vec = work / "vectors" / "pool" / f"{shard}.npy"
        save_vectors(vec, ids, rng.standard_normal((len(ids), dim)).astype(np.float32))
        shards.append(str(path))
        vectors.append(str(vec))
        all_ids += ids
    picked = rng.choice(len(all_ids), n_recalled, replace=False)
    recall = work / "recall" / "physician.jsonl"
    recall.parent.mkdir(parents=True, exist_ok=True)
    recall.write_text(
        "".join(json.dumps({"id": all_ids[i], "similarity": 0.8}) + "\n" for i in picked), encoding="utf-8"
    )
    (work / "recall" / "recall_statistics.json").write_text("{}", encoding="utf-8")
    args = {
        "recall_files": [str(recall)],
        "recall_statistics": str(work / "recall" / "recall_statistics.json"),
        "benchmark_files": [str(bench)],
        "benchmark_vectors": [str(qvec)],
        "pool_vectors": vectors,
        "pool_shards": shards,
        "eval_driven_path": str(work / "sft" / "eval_driven.jsonl"),
        "random_path": str(work / "sft" / "random.jsonl"),
        "statistics_path": str(work / "sft" / "stats.json"),
        "contamination_path": str(work / "sft" / "contamination.json"),
        "max_similarity": 0.95,
    }
    (work / "sft_inputs.json").write_text(json.dumps(args), encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--work", type=Path, default=Path("/tmp/evalsel_bench_pool"))
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ns = ap.parse_args(argv)
    src = generated(ns.work, ns.n)
    rows = []
    shutil.rmtree(ns.work / "hf_cache", ignore_errors=True)
    t, rss, got = run_child("datasets", str(src), str(ns.work / "hf_cache"))
    rows.append(("datasets.load_dataset('json')", t, rss, int(got)))
    shutil.rmtree(ns.work / "pool", ignore_errors=True)
    t, rss, got = run_child("pool_prepare", str(src), str(ns.work / "pool"))
    rows.append(("evalsel pool_prepare", t, rss, int(got)))
    sft_inputs(ns.work, ns.work / "pool")
    t, rss, got = run_child("sft_build", str(src), str(ns.work))
    rows.append(("evalsel sft_build (both arms)", t, rss, int(got)))
    print(f"\n{'step':32} {'seconds':>9} {'records/s':>11} {'peak RSS MB':>12}")
    for name, t, rss, _ in rows:
        rate = f"{ns.n / t:11,.0f}" if "sft" not in name else f"{'-':>11}"
        print(f"{name:32} {t:9.1f} {rate} {rss:12,.0f}")
    print(
        f"\npool_prepare / datasets: {rows[1][1] / rows[0][1]:.2f}x the time, {rows[1][2] / rows[0][2]:.2f}x the memory"
    )
    if not ns.keep:
        shutil.rmtree(ns.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
