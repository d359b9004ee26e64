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
_CONVERTER = None


def _t2s(text: str) -> str:
    """Traditional Chinese folded into Simplified (OpenCC ``t2s``; Simplified text is unchanged)."""
    global _CONVERTER
    if _CONVERTER is None:
        import opencc

        _CONVERTER = opencc.OpenCC("t2s")
    return _CONVERTER.convert(text)


def _visible(text: str) -> str:
    """Without format characters (zero-width space and joiners, soft hyphen, bidi marks): invisible
    in any rendering, so a copy can hide inside a word with them."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def light_normalise(text: str) -> str:
    """NFKC, invisible characters removed, case-folded, Traditional folded into Simplified, every
    run of punctuation, spaces and symbols one space: the text as tokens.

    Tokens matter where characters alone mislead: the option ``30`` in ``130`` is no match, in
    ``30, 40`` it is (:mod:`evalsel.guard.check` matches options at token boundaries).
    """
    folded = _visible(unicodedata.normalize("NFKC", text)).casefold()
    if not folded.isascii():
        folded = _t2s(folded)
    return _NON_CONTENT.sub(" ", folded).strip()


def normalise(text: str) -> str:
    """:func:`light_normalise` without the spaces: letters and digits only (CJK characters count as
    letters). Chinese has no word boundaries, so n-grams are over characters of this form: width,
    case, spacing, punctuation, invisible characters and Traditional characters hide no copy.
    """
    return light_normalise(text).replace(" ", "")


@dataclass
class BenchmarkItem:
    id: str
    subject: str
    split: str
    # Normalised question and options: n-grams never span two of them (a copy may reorder options).
    segments: list[str]
    # The same as tokens (light_normalise); the segments' own letters when not given.
    texts: list[str] | None = None

    def __post_init__(self):
        if self.texts is None:
            self.texts = list(self.segments)


def item_of(rec: dict) -> BenchmarkItem:
    """The guard item of one benchmark record (``id, subject, split, question, choices``)."""
    question, *options = (light_normalise(x) for x in [rec["question"], *rec["choices"]])
    # the question keeps its place even when empty (segment 0 is the question); empty options go
    texts = [question, *(o for o in options if o)]
    segments = [t.replace(" ", "") for t in texts]
    return BenchmarkItem(rec["id"], rec.get("subject", ""), rec.get("split", ""), segments, texts)


def load_benchmark_items(paths: Iterable[str | os.PathLike]) -> list[BenchmarkItem]:
    """Every record of the benchmark files (all splits) as guard items.

    Raises :class:`InputError` (file, line, field) on a malformed record or an id seen twice
    (:func:`evalsel.core.records.read_records`).
    """
    from evalsel.core.records import read_records

    return [item_of(rec) for _, _, rec in read_records(paths)]


def sample_texts(record: dict) -> list[str]:
    """System prompt and turns of a pool sample as tokens (:func:`light_normalise`): the full text
    that would be trained on, as the guard reads it."""
    parts = [record.get("system") or ""] + [t.get("value", "") for t in record.get("conversations", [])]
    return [t for t in (light_normalise(p) for p in parts) if t]


def sample_segments(record: dict) -> list[str]:
    """Normalised system prompt and turns of a pool sample (:func:`normalise`)."""
    return [t.replace(" ", "") for t in sample_texts(record)]


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
