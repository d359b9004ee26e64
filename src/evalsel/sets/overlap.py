"""How the arms' SFT sets relate: the Jaccard overlap of their sample ids, and the distribution of
each set's similarity to the benchmark in one space no arm selected in.

The space: the hashed n-gram counts of evalsel.select.ngrams (unigrams and bigrams of tokens,
16,384 buckets), L2-normalised; a sample's similarity is its prompt's (the user turns') highest
cosine with a recall-split question. Every arm is measured alike, without vectors, whichever
embedder or strategy chose it.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from evalsel.core.io import InputError, atomic_write, read_jsonl, write_json
from evalsel.core.texts import recall_texts
from evalsel.select.ngrams import hashed_grams

log = logging.getLogger(__name__)

NGRAMS, BUCKETS = 2, 16384


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b| (1.0 for two empty sets)."""
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def prompt_text(rec: dict) -> str:
    """The user side of an SFT record (ShareGPT human turns, or alpaca instruction and input)."""
    if "conversations" in rec:
        return "\n".join(t["value"] for t in rec["conversations"] if t.get("from") == "human")
    return "\n".join(str(rec.get(k) or "") for k in ("instruction", "input")).strip()


def tf_matrix(texts: list[str]) -> np.ndarray:
    """Dense L2-normalised hashed n-gram counts, one row per text (a zero row for a text without any)."""
    b, owner, _ = hashed_grams(texts, NGRAMS, BUCKETS)
    mat = np.zeros((len(texts), BUCKETS), dtype=np.float32)
    np.add.at(mat, (owner, b), 1.0)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    return mat / np.where(norms > 0, norms, 1.0)


def max_similarity(texts: list[str], queries: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each text's highest cosine with a row of ``queries`` in the n-gram space."""
    out = np.empty(len(texts), dtype=np.float32)
    for lo in range(0, len(texts), chunk):
        out[lo : lo + chunk] = (tf_matrix(texts[lo : lo + chunk]) @ queries.T).max(axis=1) if len(queries) else 0.0
    return out


def _read_set(path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
            raise InputError(path, lineno, "id", "missing or not a string")
        ids.append(rec["id"])
        texts.append(prompt_text(rec))
    return ids, texts


def arms_overlap(
    *,
    sft_files: dict[str, str | os.PathLike],
    benchmark_files: list[str | os.PathLike],
    recall_splits: list[str],
    query_text: str,
    json_path: str | os.PathLike,
    png_path: str | os.PathLike,
) -> dict:
    """Write the overlap JSON (sizes, pairwise intersections and Jaccard, similarity summaries)
    and its plot; returns the JSON object."""
    arms = list(sft_files)
    queries = tf_matrix(recall_texts(benchmark_files, recall_splits, query_text))
    ids, sims = {}, {}
    for arm, path in sft_files.items():
        arm_ids, texts = _read_set(path)
        ids[arm] = set(arm_ids)
        sims[arm] = max_similarity(texts, queries)
    out = {
        "space": "hashed character n-grams (evalsel.sets.overlap): the prompt's highest cosine with a recall question",
        "arms": arms,
        "sizes": {a: len(ids[a]) for a in arms},
        "intersection": {a: {b: len(ids[a] & ids[b]) for b in arms} for a in arms},
        "jaccard": {a: {b: round(jaccard(ids[a], ids[b]), 6) for b in arms} for a in arms},
        "similarity": {a: _summary(sims[a]) for a in arms},
    }
    write_json(json_path, out)
    plot_overlap(png_path, out, sims)
    log.info("overlap of %d arms: %s", len(arms), out["jaccard"])
    return out


def _summary(v: np.ndarray) -> dict:
    if not len(v):
        return {"n": 0}
    p = np.percentile(v, [5, 25, 50, 75, 95])
    return {
        "n": int(len(v)),
        "mean": round(float(v.mean()), 6),
        **{k: round(float(x), 6) for k, x in zip(("p5", "p25", "median", "p75", "p95"), p)},
    }


def plot_overlap(path, out: dict, sims: dict[str, np.ndarray]) -> None:
    """Left: the Jaccard matrix with the shared sample counts; right: each arm's similarities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = out["arms"]
    k = len(arms)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(5 + 1.2 * k + 5, 0.6 * k + 3.2))
    J = np.array([[out["jaccard"][a][b] for b in arms] for a in arms])
    ax1.imshow(J, vmin=0, vmax=1, cmap="Blues")
    for i, a in enumerate(arms):
        for j, b in enumerate(arms):
            ax1.text(
                j,
                i,
                f"{J[i, j]:.2f}\n({out['intersection'][a][b]})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if J[i, j] > 0.6 else "black",
            )
    ax1.set_xticks(range(k), arms, rotation=30, ha="right")
    ax1.set_yticks(range(k), arms)
    ax1.set_title("Jaccard overlap (shared samples)")
    # top to bottom in the heatmap's order
    data = [sims[a] if len(sims[a]) else np.zeros(1) for a in reversed(arms)]
    ax2.boxplot(data, orientation="horizontal", showfliers=False)
    ax2.set_yticks(range(1, k + 1), [f"{a} (n={len(sims[a])})" for a in reversed(arms)])
    ax2.set_xlabel("highest n-gram cosine of the prompt with a recall question")
    ax2.set_title("Similarity to the benchmark")
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
