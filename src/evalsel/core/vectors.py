"""Compact on-disk vectors: ``<stem>.npy`` (float16 or float32, L2-normalised rows,
memory-mappable) beside ``<stem>.ids.txt`` (one id per line, same order).

A vector costs ``2 x dim`` bytes in float16; no JSON floats anywhere.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalsel.core.io import InputError, atomic_write


def ids_path(npy_path: str | os.PathLike) -> Path:
    """The ids file that goes with a vectors file: ``x.npy`` -> ``x.ids.txt``."""
    p = Path(npy_path)
    return p.with_name(p.name[: -len(".npy")] + ".ids.txt") if p.name.endswith(".npy") else p.with_suffix(".ids.txt")


def l2_normalise(mat: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32). A zero row is an error: it would match nothing."""
    mat = np.asarray(mat, dtype=np.float32)
    norms = np.linalg.norm(mat, axis=1, keepdims=True)
    bad = np.flatnonzero(~np.isfinite(norms[:, 0]) | (norms[:, 0] == 0))
    if bad.size:
        raise ValueError(f"{bad.size} zero or non-finite vectors (first at row {int(bad[0])}); refusing to store them")
    return mat / norms


def save_vectors(npy_path: str | os.PathLike, ids: list[str], mat: np.ndarray, dtype: str = "float16") -> None:
    """Write normalised vectors and their ids atomically (ids file last is not enough: both are atomic)."""
    if len(ids) != len(mat):
        raise ValueError(f"{len(ids)} ids but {len(mat)} vectors")
    for i in ids:
        if "\n" in i or not i:
            raise ValueError(f"invalid id {i!r}")
    arr = (
        l2_normalise(mat).astype(np.dtype(dtype))
        if len(mat)
        else np.zeros((0, mat.shape[1] if mat.ndim == 2 else 0), dtype)
    )
    with atomic_write(npy_path, "wb", encoding=None) as fh:
        np.save(fh, arr, allow_pickle=False)
    with atomic_write(ids_path(npy_path)) as fh:
        fh.writelines(i + "\n" for i in ids)


def load_ids(npy_path: str | os.PathLike) -> list[str]:
    with open(ids_path(npy_path), encoding="utf-8") as fh:
        return [line.rstrip("\n") for line in fh]


def load_vectors(npy_path: str | os.PathLike, mmap: bool = True) -> tuple[list[str], np.ndarray]:
    """Return ``(ids, matrix)``; the matrix is memory-mapped by default."""
    arr = np.load(npy_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    ids = load_ids(npy_path)
    if arr.ndim != 2 or len(ids) != arr.shape[0]:
        raise InputError(npy_path, None, None, f"vectors shape {arr.shape} does not match {len(ids)} ids")
    return ids, arr


@dataclass
class EmbedResult:
    """Normalised float32 vectors (one row per input text, input order) and what it took."""

    vectors: np.ndarray
    model: str
    device: str
    truncated: int = 0
    cache_hits: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0

    def statistics(self, backend: str, dtype: str) -> dict[str, Any]:
        n = len(self.vectors)
        return {
            "count": n,
            "truncated": self.truncated,
            "dims": int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0,
            "dtype": dtype,
            "backend": backend,
            "model": self.model,
            "device": self.device,
            "load_seconds": round(self.load_seconds, 3),
            "seconds": round(self.seconds, 3),
            "texts_per_s": round(n / self.seconds, 2) if self.seconds > 0 else None,
            "cache_hits": self.cache_hits,
            "requests": self.requests,
            "retries": self.retries,
        }


def load_queries(vector_paths: list, items: list) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(query ids, subject index per query, float32 matrix)`` of the benchmark question vectors.

    Refuses ids absent from the benchmark records (stale vectors) and mismatched dimensions.
    """
    known = {it.id for it in items}
    ids, subj, mats = [], [], []
    for s, path in enumerate(vector_paths):
        qids, mat = load_vectors(path, mmap=False)
        for line, qid in enumerate(qids, start=1):
            if qid not in known:
                raise InputError(
                    ids_path(path), line, "id", f"question {qid!r} is not in the benchmark records: vectors are stale"
                )
        if mats and mat.shape[1] != mats[0].shape[1]:
            raise InputError(
                path, None, None, f"dimension {mat.shape[1]} differs from {mats[0].shape[1]} of {vector_paths[0]}"
            )
        ids += qids
        subj += [s] * len(qids)
        mats.append(np.asarray(mat, dtype=np.float32))
    return ids, np.array(subj, dtype=np.int64), np.concatenate(mats) if mats else np.zeros((0, 0), np.float32)
