"""The pool on disk: vector files and their JSONL shards addressed by one global position, and the
validation of a pool record."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evalsel.core.io import InputError
from evalsel.core.vectors import ids_path, load_vectors


def _stem(path: Path, suffix: str) -> str:
    return path.name[: -len(suffix)] if path.name.endswith(suffix) else path.stem


@dataclass
class PoolFile:
    vectors: Path
    shard: Path | None
    start: int
    count: int


def validate_pool_record(rec, path, lineno) -> None:
    """Refuse a pool record that lacks what training needs (InputError names file, line, field)."""
    if not isinstance(rec, dict):
        raise InputError(path, lineno, None, "expected a JSON object")
    for key in ("id", "source", "text"):
        if not isinstance(rec.get(key), str):
            raise InputError(path, lineno, key, "missing or not a string")
    if not isinstance(rec.get("system", ""), str):
        raise InputError(path, lineno, "system", "not a string")
    if not isinstance(rec.get("medical"), bool):
        raise InputError(path, lineno, "medical", "missing or not true/false")
    conv = rec.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise InputError(path, lineno, "conversations", "missing or empty")
    for i, turn in enumerate(conv):
        if (
            not isinstance(turn, dict)
            or turn.get("from") not in ("human", "gpt")
            or not isinstance(turn.get("value"), str)
        ):
            raise InputError(path, lineno, f"conversations[{i}]", "expected {'from': 'human'|'gpt', 'value': str}")


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """``(line, record)`` of each non-blank line of a pool shard, validated."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(path, lineno, None, f"malformed JSON ({exc.msg})") from None
            validate_pool_record(rec, path, lineno)
            yield lineno, rec


class PoolIndex:
    """The pool's vector files (and, when given, their JSONL shards) addressed by one global position.

    Positions follow the order of ``vector_paths`` then rows. A pool id seen again (the same sample
    in two sources) is marked in ``duplicate`` and never scored; ``position`` maps an id to its first
    position. Vector files are matched to shards by ``(source directory, shard name)``.
    """

    def __init__(self, vector_paths: list[str | os.PathLike], shard_paths: list[str | os.PathLike] | None = None):
        if not vector_paths:
            raise InputError(None, None, "pool_vectors", "no pool vector files given")
        shards = {}
        for p in shard_paths or []:
            p = Path(p)
            shards[(p.parent.name, _stem(p, ".jsonl"))] = p
        self.files: list[PoolFile] = []
        self.ids: list[str] = []
        self.dim: int | None = None
        start = 0
        for vp in map(Path, vector_paths):
            fids, mat = load_vectors(vp, mmap=True)
            if self.dim is None:
                self.dim = int(mat.shape[1])
            elif mat.shape[1] != self.dim:
                raise InputError(
                    vp,
                    None,
                    None,
                    f"vector dimension {mat.shape[1]} differs from {self.dim} in {self.files[0].vectors}",
                )
            shard = shards.get((vp.parent.name, _stem(vp, ".npy")))
            if shard_paths is not None and shard is None:
                raise InputError(
                    vp, None, None, f"no pool shard {vp.parent.name}/{_stem(vp, '.npy')}.jsonl among the inputs"
                )
            self.files.append(PoolFile(vp, shard, start, len(fids)))
            self.ids.extend(fids)
            start += len(fids)
            del mat
        self._index_ids()

    def _index_ids(self) -> None:
        start = sum(f.count for f in self.files)
        self.size = start
        self.starts = np.array([f.start for f in self.files] + [start], dtype=np.int64)
        # Reversed so that the first occurrence of an id is the one that stays in the dict.
        self.position: dict[str, int] = dict(zip(reversed(self.ids), range(start - 1, -1, -1)))
        first = np.fromiter((self.position[i] for i in self.ids), dtype=np.int64, count=start)
        self.duplicate = first != np.arange(start)
        self.n_duplicates = int(self.duplicate.sum())

    @classmethod
    def from_shards(cls, shard_paths: list[str | os.PathLike], visit=None, progress: bool = False) -> PoolIndex:
        """The pool without vectors (selection strategies with features of their own, such as
        DSIR): positions follow the shards' order; ids are read from the records, validated.
        ``visit(record)`` is called on each record in position order, in the same single pass."""
        if not shard_paths:
            raise InputError(None, None, "pool_shards", "no pool shard files given")
        self = cls.__new__(cls)
        self.files, self.ids, self.dim = [], [], None
        start = 0
        for sp in tqdm(list(map(Path, shard_paths)), desc="read pool shards", unit="shard", disable=not progress):
            n = 0
            for _, rec in iter_records(sp):
                self.ids.append(rec["id"])
                n += 1
                if visit is not None:
                    visit(rec)
            self.files.append(PoolFile(sp, sp, start, n))
            start += n
        self._index_ids()
        return self

    @classmethod
    def from_array(cls, mat: np.ndarray) -> PoolIndex:
        """An in-memory pool (tests, benchmarks): one file, positions = rows, no shards."""
        self = cls.__new__(cls)
        self.files = [PoolFile(Path("<array>"), None, 0, len(mat))]
        self._array = mat
        self.ids = [str(i) for i in range(len(mat))]
        self.dim = int(mat.shape[1])
        self.size = len(mat)
        self.starts = np.array([0, len(mat)], dtype=np.int64)
        self.position = {i: n for n, i in enumerate(self.ids)}
        self.duplicate = np.zeros(len(mat), dtype=bool)
        self.n_duplicates = 0
        return self

    def _matrix(self, f: PoolFile) -> np.ndarray:
        if self.dim is None:
            raise ValueError("this pool index was built from the shards alone: it has no vectors")
        arr = getattr(self, "_array", None)
        return arr if arr is not None else load_vectors(f.vectors, mmap=True)[1]

    def blocks(self, block_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """``(first position, rows as stored, duplicate mask)`` of at most ``block_size`` rows.

        One file is mapped at a time, so resident memory stays near one block whatever the pool size.
        """
        for f in self.files:
            mat = self._matrix(f)
            for lo in range(0, f.count, block_size):
                hi = min(lo + block_size, f.count)
                yield f.start + lo, mat[lo:hi], self.duplicate[f.start + lo : f.start + hi]
            del mat

    def locate(self, positions: np.ndarray) -> np.ndarray:
        """Index of the file holding each position."""
        return np.searchsorted(self.starts, positions, side="right") - 1

    def gather(self, positions) -> np.ndarray:
        """float32 vectors of the given positions, in the given order."""
        positions = np.asarray(positions, dtype=np.int64)
        out = np.empty((len(positions), self.dim or 0), dtype=np.float32)
        fidx = self.locate(positions)
        for fi in np.unique(fidx):
            sel = np.flatnonzero(fidx == fi)
            f = self.files[fi]
            rows = positions[sel] - f.start
            order = np.argsort(rows, kind="stable")
            mat = self._matrix(f)
            out[sel[order]] = np.asarray(mat[rows[order]], dtype=np.float32)
            del mat
        return out

    def fetch(self, positions, progress: bool = False) -> dict[int, dict]:
        """Pool records of the given positions, read from the shards (only the wanted lines are parsed).

        Raises :class:`InputError` (shard, line, field) when a record is invalid, when its id is not the
        id of the vectors row, or when a shard has fewer records than its vectors file.
        """
        positions = sorted({int(p) for p in positions})
        out: dict[int, dict] = {}
        if not positions:
            return out
        fidx = self.locate(np.array(positions, dtype=np.int64))
        by_file: dict[int, dict[int, int]] = {}
        for p, fi in zip(positions, fidx.tolist()):
            by_file.setdefault(fi, {})[p - self.files[fi].start] = p
        for fi, wanted in tqdm(
            sorted(by_file.items()), desc="read pool shards", unit="shard", disable=not progress, leave=False
        ):
            f = self.files[fi]
            if f.shard is None:
                raise InputError(f.vectors, None, None, "no pool shard to read the records of these vectors from")
            found, row = 0, -1
            with open(f.shard, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    row += 1
                    pos = wanted.get(row)
                    if pos is None:
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f.shard, lineno, None, f"malformed JSON ({exc.msg})") from None
                    validate_pool_record(rec, f.shard, lineno)
                    if rec["id"] != self.ids[pos]:
                        raise InputError(
                            f.shard,
                            lineno,
                            "id",
                            f"{rec['id']!r} but row {row} of {ids_path(f.vectors)} is {self.ids[pos]!r}: vectors are stale",
                        )
                    out[pos] = rec
                    found += 1
                    if found == len(wanted):
                        break
            if found < len(wanted):
                raise InputError(f.shard, None, None, f"has {row + 1} records but {f.vectors} has {f.count} vectors")
        return out
