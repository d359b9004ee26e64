"""The real pool of ../shared/data laid out as the workflow's artifacts (a shard per file, with
cheap hashed vectors), for the tests that run recall and sft_build on real text."""

from __future__ import annotations

import json
from pathlib import Path


def hash_vectors(texts, dim=256):
    """Bag of character bigrams hashed into ``dim`` buckets: a cheap real-text embedding for tests."""
    import zlib

    import numpy as np

    mat = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for j in range(len(t) - 1):
            mat[i, zlib.crc32(t[j : j + 2].encode()) % dim] += 1.0
        mat[i, zlib.crc32(t[:1].encode()) % dim] += 1.0  # no all-zero row for 1-character texts
    return mat


def first_turns(record: dict) -> list[str]:
    """(prompt, response) of a pool record in any of the shared data's formats."""
    if "conversations" in record:
        return [str(c.get("value", "")).strip() for c in record["conversations"]][:2]
    if "instruction" in record:
        return [(record["instruction"] + "\n" + record.get("input", "")).strip(), str(record["output"]).strip()]
    return [str(record["question"]).strip(), str(record["answer"]).strip()]


def write_real_pool(shared: Path, root: Path, per_file: int, edit=None, extra: dict | None = None):
    """Shards and vectors of the first ``per_file`` records of each real pool file under ``root``.

    ``edit(file stem, line index, turns)`` may rewrite a record's turns; ``extra`` maps a file stem
    to more ``[prompt, response, ...]`` turns appended to it. Returns ``(vector paths, shard paths)``.
    """
    from evalsel.core.io import text_hash, write_jsonl
    from evalsel.core.vectors import save_vectors

    vectors, shards = [], []
    for f in sorted((shared / "pool").glob("*.jsonl")):
        pairs = []
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines()[:per_file]):
            turns = first_turns(json.loads(line))
            if edit is not None:
                turns = edit(f.stem, n, turns)
            pairs.append((n, turns))
        pairs += [(per_file + k, list(t)) for k, t in enumerate((extra or {}).get(f.stem, []))]
        records, seen = [], set()
        for n, turns in pairs:
            if len(turns) < 2 or not all(turns):
                continue
            conv = [{"from": "gpt" if k % 2 else "human", "value": t} for k, t in enumerate(turns)]
            rid = text_hash(json.dumps(conv, ensure_ascii=False))
            if rid in seen:
                continue
            seen.add(rid)
            records.append(
                {
                    "id": rid,
                    "source": f.stem,
                    "medical": not f.stem.startswith("general"),
                    "system": "",
                    "conversations": conv,
                    "text": turns[0][:200],
                    "origin": f"{f.name}:{n + 1}",
                }
            )
        shard = root / f"results/pool/{f.stem}/shard-00000.jsonl"
        write_jsonl(shard, records)
        vec = root / f"results/vectors/pool/{f.stem}/shard-00000.npy"
        save_vectors(vec, [r["id"] for r in records], hash_vectors([r["text"] for r in records]))
        shards.append(str(shard))
        vectors.append(str(vec))
    return vectors, shards


SUBJECTS = ["basic_medicine", "clinical_medicine", "physician"]


def write_real_benchmark(shared: Path, root: Path, subjects=SUBJECTS) -> dict[str, list[dict]]:
    """Real C-Eval medical (val and test) as normalised benchmark files under ``root``, with hashed
    vectors of the val questions (the recall queries). Returns the records per subject."""
    from evalsel.core.io import write_jsonl
    from evalsel.core.vectors import save_vectors

    bench = {}
    for s in subjects:
        rows = []
        for split in ("val", "test"):
            for line in (shared / "ceval_medical" / split / f"{s}.jsonl").read_text(encoding="utf-8").splitlines():
                r = json.loads(line)
                rows.append(
                    {
                        "id": f"{s}/{split}/{r['id']}",
                        "subject": s,
                        "split": split,
                        "question": r["question"],
                        "choices": [r[c] for c in "ABCD"],
                        "answer": r["answer"],
                        "explanation": "",
                    }
                )
        bench[s] = rows
        write_jsonl(root / f"results/benchmark/{s}.jsonl", rows)
        val = [r for r in rows if r["split"] == "val"]
        save_vectors(
            root / f"results/vectors/benchmark/{s}.npy",
            [r["id"] for r in val],
            hash_vectors([r["question"] for r in val]),
        )
    return bench


def selection_paths(root: Path, subjects=SUBJECTS) -> tuple[list[str], list[str], list[str]]:
    """(benchmark files, query vector files, recall outputs) of ``subjects`` under ``root``."""
    return (
        [str(root / f"results/benchmark/{s}.jsonl") for s in subjects],
        [str(root / f"results/vectors/benchmark/{s}.npy") for s in subjects],
        [str(root / f"results/recall/{s}.jsonl") for s in subjects],
    )
