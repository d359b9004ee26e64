"""The contamination guard at scale, side by side with the previous guard's 13-gram scan.

    python perf/bench_guard.py                 # 2,000,000 synthetic samples x 1,000 items, plus the real pool
    python perf/bench_guard.py --n 200000

Benchmark items: real C-Eval medical (../shared/data, 908) topped up to 1,000 with synthetic ones.
Samples: synthetic Chinese medical text of realistic lengths (prompt ~35, response ~250 characters),
generated on the fly (never held in memory); then the real ~70k pool of ../shared/data, whose
figures per sample are the ones that matter (real text finds more candidates).
Prints seconds, microseconds per sample, drops, and peak RSS; ratio new/old in one run.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "perf"))
SHARED = REPO.parent / "shared" / "data"


def items(n: int):
    import numpy as np
    from bench_pool import CHARS

    from evalsel.guard.leak import BenchmarkItem, item_of, normalise

    out = []
    for path in sorted((SHARED / "ceval_medical").glob("*/*.jsonl")) if SHARED.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            rec = {"id": f"{path.stem}/{path.parent.name}/{r['id']}", "question": r["question"]}
            out.append(
                item_of({**rec, "subject": path.stem, "split": path.parent.name, "choices": [r[c] for c in "ABCD"]})
            )
    rng = np.random.default_rng(5)
    chars = np.array(list(CHARS))
    while len(out) < n:
        q = "".join(rng.choice(chars, int(rng.integers(8, 60))))
        opts = ["".join(rng.choice(chars, int(rng.integers(2, 8)))) for _ in range(4)]
        out.append(BenchmarkItem(f"synthetic/{len(out)}", "s", "val", [normalise(q)] + [normalise(o) for o in opts]))
    return out[:n]


def synthetic_samples(n: int, seed: int = 0):
    import numpy as np
    from bench_pool import CHARS

    from evalsel.guard.leak import light_normalise

    rng = np.random.default_rng(seed)
    chars = np.array(list(CHARS))
    for start in range(0, n, 10000):  # chunks of 10,000: generated outside the timed scan
        k = min(10000, n - start)
        ql = np.clip(rng.lognormal(np.log(35), 0.5, k), 2, 400).astype(int)
        al = np.clip(rng.lognormal(np.log(250), 0.6, k), 2, 1500).astype(int)
        text = "".join(rng.choice(chars, int(ql.sum() + al.sum())))
        chunk, pos = [], 0
        for i in range(k):
            q, a = text[pos : pos + ql[i]], text[pos + ql[i] : pos + ql[i] + al[i]]
            pos += ql[i] + al[i]
            chunk.append([light_normalise(q), light_normalise(a)])
        yield chunk


def real_samples():
    from evalsel.guard.leak import light_normalise

    chunk = []
    for f in sorted((SHARED / "pool").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if "conversations" in r:
                parts = [t.get("value", "") for t in r["conversations"]]
            elif "instruction" in r:
                parts = [r.get("instruction", ""), r.get("input", ""), r.get("output", "")]
            else:
                parts = [r.get("question", ""), r.get("answer", "")]
            chunk.append([s for s in (light_normalise(p) for p in parts if isinstance(p, str)) if s])
    yield chunk


def scan(check_many, chunks, strict: bool) -> tuple[float, int, int]:
    """Seconds spent in ``check_many`` alone (chunks are made, and for the 13-gram scan stripped of
    spaces, outside the clock), samples, drops; batches of 1,024 samples, as the workflow checks."""
    spent = 0.0
    n = drops = 0
    for chunk in chunks:
        if strict:
            chunk = [[t.replace(" ", "") for t in texts] for texts in chunk]
        for lo in range(0, len(chunk), 1024):
            batch = chunk[lo : lo + 1024]
            t0 = time.perf_counter()
            drops += sum(1 for hits in check_many(batch) if hits)
            spent += time.perf_counter() - t0
        n += len(chunk)
    return spent, n, drops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--items", type=int, default=1000)
    ns = ap.parse_args(argv)
    from evalsel.guard.check import ContentGuard
    from evalsel.guard.leak import NgramIndex

    its = items(ns.items)
    t0 = time.perf_counter()
    guard = ContentGuard(its)
    build = time.perf_counter() - t0
    old = NgramIndex(its, 13)
    print(
        f"{len(its)} benchmark items ({sum(1 for i in its if not i.id.startswith('synthetic'))} real); "
        f"guard index built in {build:.2f} s"
    )
    rows = []
    for label, make in (
        (f"synthetic x {ns.n:,}", lambda: synthetic_samples(ns.n)),
        ("real pool (../shared/data)", real_samples if SHARED.is_dir() else None),
    ):
        if make is None:
            continue
        t_old, n, d_old = scan(lambda batch: [old.matches(segs) for segs in batch], make(), True)
        t_new, _, d_new = scan(guard.check_many, make(), False)
        rows.append((label, n, t_old, d_old, t_new, d_new))
    print(
        f"\n{'samples':28} {'n':>10} | {'13-gram s':>9} {'us/sample':>9} {'drops':>7} | "
        f"{'guard s':>8} {'us/sample':>9} {'drops':>7} | new/old"
    )
    for label, n, t_old, d_old, t_new, d_new in rows:
        print(
            f"{label:28} {n:10,} | {t_old:9.1f} {1e6 * t_old / n:9.1f} {d_old:7,} | "
            f"{t_new:8.1f} {1e6 * t_new / n:9.1f} {d_new:7,} | {t_new / t_old:5.2f}x"
        )
    print(
        f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB "
        "(samples generated on the fly; the items' indexes are what stays)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
