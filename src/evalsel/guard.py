"""The contamination guard: one check, used by recall and by sft_build, of a training sample
against every benchmark item (question and options, every split).

A sample is dropped for an item, with one reason name each (counted in the statistics, listed per
item in ``contamination.json``):

- ``exact_ngram``: it shares a character n-gram (``ngram_n``, 13) with the item's question or an option;
- ``containment``: most of the question's character shingles (``shingle_n``, 3) occur in it
  (survives reordering and a few edits of a long question);
- ``fuzzy``: the question aligns with a stretch of the sample at a high edit similarity
  (rapidfuzz ``partial_ratio``: survives substituted, inserted or deleted characters, and a question
  embedded in a longer sentence);
- ``options``: most of the item's option texts occur in it verbatim, with part of the question
  (the leak that teaches an answer key: short question reworded, options kept);
- ``max_similarity`` (applied by the callers, from the vectors): cosine above ``max_similarity``.

Texts are compared after :func:`evalsel.leak.normalise` (NFKC, case-folded, letters and digits
only), so width, case, spacing and punctuation changes hide nothing. Candidates come from an
inverted index of the items' rare shingles (a shingle in more than ``common_df`` items is not
used to find candidates): exact shared-shingle counts, which a MinHash LSH would only estimate
(and Jaccard similarity of a 20-character question with a 300-character sample is tiny even when
the sample contains it). Each candidate is then scored exactly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from .leak import BenchmarkItem, NgramIndex, char_ngrams

REASONS = ("exact_ngram", "containment", "fuzzy", "options", "max_similarity")
# an item is a candidate when the sample holds half of its options' rare shingles
OPTION_CANDIDATE_SHARE = 0.5


@dataclass(frozen=True)
class GuardSettings:
    """Thresholds of the text checks (config ``leak_guard``); see README "Contamination guard"."""

    ngram_n: int = 13
    shingle_n: int = 3
    containment: float = 0.6
    min_containment_chars: int = 8
    fuzzy: float = 80.0
    min_fuzzy_chars: int = 10
    options_share: float = 0.75
    min_option_chars: int = 2
    options_question_share: float = 0.25
    min_all_options_chars: int = 8
    candidate_share: float = 0.25
    common_df: int = 40

    def validate(self) -> None:
        if self.ngram_n < 4 or self.shingle_n < 2 or self.shingle_n > self.ngram_n:
            raise ValueError("leak_guard: need ngram_n >= 4 and 2 <= shingle_n <= ngram_n")
        for name in ("containment", "options_share", "options_question_share", "candidate_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"leak_guard.{name} must be in (0, 1]")
        if not 0 < self.fuzzy <= 100:
            raise ValueError("leak_guard.fuzzy must be in (0, 100]")


def guard_settings(leak_guard: dict | None) -> GuardSettings:
    """The guard's settings from the config's ``leak_guard`` section (keys the guard does not use,
    such as ``longest_seed_n`` of the contamination report, are ignored)."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(GuardSettings)}
    s = GuardSettings(**{k: v for k, v in (leak_guard or {}).items() if k in known})
    s.validate()
    return s


@dataclass(frozen=True)
class Hit:
    """One reason a sample is dropped for one benchmark item."""

    item: int
    reason: str
    score: float
    detail: str = ""

    def record(self, items: list[BenchmarkItem]) -> dict:
        out = {"benchmark_id": items[self.item].id, "reason": self.reason, "score": round(self.score, 4)}
        if self.detail:
            out["detail"] = self.detail
        return out


def _shingles(text: str, n: int) -> set[str]:
    """The ``n``-shingles of one item text; a text shorter than ``n`` is its own shingle."""
    return char_ngrams([text], n) if len(text) >= n else ({text} if text else set())


def _rare_index(texts: list[list[str]], n: int, common_df: int) -> tuple[dict[str, list[int]], Counter]:
    """Shingle -> items holding it (``texts[i]`` are item i's texts), without the shingles of more
    than ``common_df`` items; and per item the number of rare shingles it has."""
    table: dict[str, list[int]] = {}
    for idx, parts in enumerate(texts):
        for sh in set().union(*(_shingles(t, n) for t in parts)):
            table.setdefault(sh, []).append(idx)
    table = {sh: ids for sh, ids in table.items() if len(ids) <= common_df}
    return table, Counter(i for ids in table.values() for i in ids)


class ContentGuard:
    """The text checks against every benchmark item; :meth:`check` scores one sample."""

    def __init__(self, items: list[BenchmarkItem], settings: GuardSettings | None = None):
        from rapidfuzz import fuzz

        self._partial_ratio = fuzz.partial_ratio
        self.settings = s = settings or GuardSettings()
        s.validate()
        self.items = items
        self.questions = [it.segments[0] if it.segments else "" for it in items]
        self.options = [[o for o in it.segments[1:] if len(o) >= s.min_option_chars] for it in items]
        self.q_shingles = [_shingles(q, s.shingle_n) for q in self.questions]
        self.ngrams = NgramIndex(items, s.ngram_n)  # exact n-grams of every segment
        self.too_short_for_ngram = self.ngrams.too_short
        # candidate generation: rare shingles -> items, the question's and the options' apart
        self.postings, self.rare_q = _rare_index([[q] for q in self.questions], s.shingle_n, s.common_df)
        self.opt_postings, self.rare_o = _rare_index(self.options, s.shingle_n, s.common_df)
        # options shorter than a shingle are looked up whole, at their own length
        self.short_option_lengths = sorted({len(o) for opts in self.options for o in opts if len(o) < s.shingle_n})

    def candidates(self, segments: list[str], sample_shingles: set[str]) -> list[int]:
        """Items sharing at least ``candidate_share`` of their question's rare shingles, or half of
        their options' rare shingles, with the sample (``sample_shingles``: its ``shingle_n``-grams)."""
        s = self.settings
        shared_q = Counter(i for sh in sample_shingles for i in self.postings.get(sh, ()))
        option_grams = sample_shingles.union(*(char_ngrams(segments, n) for n in self.short_option_lengths))
        shared_o = Counter(i for sh in option_grams for i in self.opt_postings.get(sh, ()))
        out = {i for i, c in shared_q.items() if c >= s.candidate_share * self.rare_q[i]}
        out |= {i for i, c in shared_o.items() if c >= OPTION_CANDIDATE_SHARE * self.rare_o[i]}
        return sorted(out)

    def check(self, segments: list[str]) -> list[Hit]:
        """Every (item, reason) the sample (normalised segments) is dropped for, best reason per item."""
        s = self.settings
        hits = {idx: Hit(idx, "exact_ngram", 1.0, gram) for idx, gram in self.ngrams.matches(segments).items()}
        sample_sh = char_ngrams(segments, s.shingle_n)
        cands = [i for i in self.candidates(segments, sample_sh) if i not in hits]
        if not cands:
            return sorted(hits.values(), key=lambda h: h.item)
        text = "|".join(segments)
        for idx in cands:
            q = self.questions[idx]
            qsh = self.q_shingles[idx]
            contained = len(qsh & sample_sh) / len(qsh) if qsh else 0.0
            if len(q) >= s.min_containment_chars and contained >= s.containment:
                hits[idx] = Hit(idx, "containment", contained)
                continue
            if len(q) >= s.min_fuzzy_chars:
                ratio = self._partial_ratio(q, text, score_cutoff=s.fuzzy)
                if ratio:
                    hits[idx] = Hit(idx, "fuzzy", ratio)
                    continue
            opts = self.options[idx]
            if len(opts) >= 2:
                found = [o for o in opts if o in text]
                # most options with part of the question, or every one of three or more options
                if (len(found) >= max(2, s.options_share * len(opts)) and contained >= s.options_question_share) or (
                    len(found) == len(opts) >= 3 and sum(map(len, found)) >= s.min_all_options_chars
                ):
                    hits[idx] = Hit(idx, "options", len(found) / len(opts), ",".join(found))
        return sorted(hits.values(), key=lambda h: h.item)
