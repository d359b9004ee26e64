"""Benchmark leak guard beyond cosine: character n-grams shared between benchmark items (question
and options, every split) and training samples (the whole conversation), and the longest shared
substring per benchmark item.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Punctuation, spaces, blanks ("____") and symbols carry no content and differ between copies.
_NON_CONTENT = re.compile(r"[\W_]+")


def normalise(text: str) -> str:
    """NFKC, case-folded, letters and digits only (CJK characters count as letters).

    Chinese has no word boundaries, so n-grams are over characters of this normal form: full-width
    and half-width forms, case, spacing and punctuation no longer hide a copy.
    """
    return _NON_CONTENT.sub("", unicodedata.normalize("NFKC", text).casefold())


@dataclass
class BenchmarkItem:
    id: str
    subject: str
    split: str
    # Normalised question and options: n-grams never span two of them (a copy may reorder options).
    segments: list[str]


def load_benchmark_items(paths: Iterable[str | os.PathLike]) -> list[BenchmarkItem]:
    """Every record of the benchmark files (all splits) as guard items.

    Raises :class:`InputError` (file, line, field) on a malformed record or an id seen twice
    (:func:`evalsel.records.read_records`).
    """
    from .records import read_records

    items: list[BenchmarkItem] = []
    for _, _, rec in read_records(paths):
        segments = [s for s in (normalise(t) for t in [rec["question"], *rec["choices"]]) if s]
        items.append(BenchmarkItem(rec["id"], rec["subject"], rec["split"], segments))
    return items


def sample_segments(record: dict) -> list[str]:
    """Normalised system prompt and turns of a pool sample: the full text that would be trained on."""
    parts = [record.get("system") or ""] + [t.get("value", "") for t in record.get("conversations", [])]
    return [s for s in (normalise(p) for p in parts) if s]


def char_ngrams(segments: Iterable[str], n: int) -> set[str]:
    """Every ``n``-character substring of the segments (none spans two segments)."""
    out: set[str] = set()
    for s in segments:
        out.update(s[i : i + n] for i in range(len(s) - n + 1))
    return out


class NgramIndex:
    """Hash set of the character n-grams of benchmark items; a sample is scanned once per check."""

    def __init__(self, items: list[BenchmarkItem], n: int):
        if n < 1:
            raise ValueError(f"n-gram length must be >= 1, got {n}")
        self.n = n
        self.items = items
        self.grams: dict[str, list[int]] = {}
        # Items with no segment as long as n cannot be caught by this check: reported, not hidden.
        self.too_short = 0
        for idx, item in enumerate(items):
            grams = char_ngrams(item.segments, n)
            if not grams:
                self.too_short += 1
            for g in grams:
                self.grams.setdefault(g, []).append(idx)
        self._keys = set(self.grams)

    def matches(self, segments: list[str]) -> dict[int, str]:
        """``{item index: one shared n-gram}`` for every benchmark item the sample shares an n-gram with."""
        hits = char_ngrams(segments, self.n) & self._keys
        out: dict[int, str] = {}
        for g in sorted(hits):
            for idx in self.grams[g]:
                out.setdefault(idx, g)
        return out


def _shares(a: list[str], b_cache: dict[int, set[str]], b: list[str], length: int) -> bool:
    if length not in b_cache:
        b_cache[length] = char_ngrams(b, length)
    grams = b_cache[length]
    return any(s[i : i + length] in grams for s in a for i in range(len(s) - length + 1))


def longest_shared(
    items: list[BenchmarkItem], samples: Iterable[tuple[str, list[str]]], seed_n: int = 8
) -> list[tuple[int, str | None]]:
    """Per benchmark item, ``(length, sample id)`` of the longest substring (normalised characters)
    it shares with any of ``samples`` (``(id, segments)`` pairs; the first sample wins a tie).

    Exact for lengths >= ``seed_n``: only (item, sample) pairs that share a ``seed_n``-gram are
    compared, by binary search on the shared length. Items sharing nothing that long get ``(0, None)``.
    """
    seed = NgramIndex(items, seed_n)
    best: list[tuple[int, str | None]] = [(0, None)] * len(items)
    item_cache: list[dict[int, set[str]]] = [{} for _ in items]
    for sid, segs in samples:
        cands = seed.matches(segs)
        if not cands:
            continue
        limit = max(len(s) for s in segs)
        for idx in sorted(cands):
            isegs = items[idx].segments
            lo = max(best[idx][0] + 1, seed_n)
            hi = min(limit, max(len(s) for s in isegs))
            # The sample is scanned; the item's n-grams of each length are hashed once and cached.
            if lo > hi or not _shares(segs, item_cache[idx], isegs, lo):
                continue
            while lo < hi:  # invariant: a shared substring of length lo exists
                mid = (lo + hi + 1) // 2
                if _shares(segs, item_cache[idx], isegs, mid):
                    lo = mid
                else:
                    hi = mid - 1
            best[idx] = (lo, sid)
    return best
