"""The contamination guard: one check, used by recall, DSIR, sft_build and the transfer guard, of a
training sample against every benchmark item (question and options, every split).

A sample is dropped for an item, with one reason name each (counted in the statistics, listed per
item in ``contamination.json``):

- ``exact_ngram``: it shares a character n-gram (``ngram_n``, 13) with the item's question or an
  option, and the n-gram holds ``min_ngram_letters`` (6) content letters: digits, units and
  symbols alone (vital signs ``8次/分 bp130/70mmHg``, lab values) are no evidence;
- ``containment``: most of the question's character shingles (``shingle_n``, 3) occur in it
  (survives reordering and a few edits of a question of ``min_containment_chars``+ characters);
- ``fuzzy``: the question aligns with a stretch of the sample at a high edit similarity
  (rapidfuzz ``partial_ratio``: survives substituted, inserted or deleted characters, and a question
  embedded in a longer sentence);
- ``short_question``: a question too short for the two above (fewer than 13 characters, such as
  ``慢性十二指肠溃疡____``) occurs whole, and with it one of its options that carries text, or half
  of its options: the question alone is an ordinary phrase that consultations use;
- ``options``: most of the item's options occur, with half of its question's shingles (the leak
  that teaches an answer key: short question reworded, options kept); or every one of 3+ options
  occurs close together, 3 of them carrying text, ``min_all_options_chars`` letters in all;
- ``max_similarity`` (applied by the callers, from the vectors): cosine above ``max_similarity``.

Options are matched as options, not as substrings: an option that begins or ends with a Latin
letter or a digit must stand at a token boundary there (``30`` is not in ``130``), and an option
with fewer than ``min_strong_option_chars`` content letters (``30``, ``B1``, ``Na+``, ``1:2:1``,
``3天``) is weak: weak options count only with evidence from the question, never alone.

Texts are compared after :func:`evalsel.guard.leak.light_normalise` (NFKC, invisible characters removed,
case-folded, Traditional folded into Simplified, punctuation as token breaks); the character
checks use :func:`evalsel.guard.leak.normalise` (the same without spaces). Candidates come from an
inverted index of the items' rare shingles (a shingle in more than ``common_df`` items finds no
candidates), looked up for a whole batch of samples at once: each shingle packed exactly into one
integer (three 21-bit code points), found by binary search in a sorted array, the shared-shingle
counts per (sample, item) from a sort, no hashing that could collide. Each candidate is then scored
exactly, as before.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from evalsel.core.settings import default
from evalsel.guard.leak import BenchmarkItem, char_ngrams, sample_texts

REASONS = ("exact_ngram", "containment", "fuzzy", "short_question", "options", "max_similarity")
# an item is a candidate when the sample holds half of its options' rare shingles
OPTION_CANDIDATE_SHARE = 0.5
# a question whole in a sample, with an option, counts below this many characters (short_question)
SHORT_QUESTION_MIN = 4
# all options of rule 2 (and a short question's option) lie within 4 times their own length
# plus this many characters
OPTION_SPAN_SLACK = 40
# rule 2 without answer letters needs this share of the question's shingles, or this many letters
# of options: a list of the options alone is often ordinary prose ("常见的阴道炎有...")
OPTIONS_TRACE = 0.05
OPTIONS_LONG = 40
# the question's shingles that count for containment lie within this many times its length
CONTAINMENT_WINDOW = 3
LETTER_MARKS = frozenset("abcdefg")
# Characters of counts and units: they carry no content of their own (vital signs, lab values,
# doses), and ASCII letter runs shorter than 3 (mg, ml, bp, na) neither.
UNIT_CHARS = frozenset("次分秒时小天日周月年岁克千毫微升米厘个粒片支瓶袋度斤两元")
LATIN_UNITS = (
    "mmol",
    "mmoll",
    "umol",
    "umoll",
    "nmol",
    "nmoll",
    "pmol",
    "pmoll",
    "mol",
    "moll",
    "mmhg",
    "cmh2o",
    "mgdl",
    "mgl",
    "gdl",
    "gl",
    "ngml",
    "pgml",
    "iul",
    "uml",
    "mg",
    "ml",
    "kg",
    "cm",
    "mm",
    "bpm",
    "min",
    "iu",
    "ul",
    "dl",
    "ng",
    "pg",
    "kpa",
    "mpa",
    "hpf",
    "lpf",
    "sec",
    "hr",
    "bp",
    "kcal",
    "mmh",
)
_LATIN_RUN = re.compile(r"[a-z]+")
_SEP = "\x00"


@dataclass(frozen=True)
class GuardSettings:
    """Thresholds of the text checks (config ``leak_guard``); see docs/method.md "Contamination guard"."""

    ngram_n: int = default("leak_guard.ngram_n")
    shingle_n: int = default("leak_guard.shingle_n")
    containment: float = default("leak_guard.containment")
    min_containment_chars: int = default("leak_guard.min_containment_chars")
    fuzzy: float = default("leak_guard.fuzzy")
    min_fuzzy_chars: int = default("leak_guard.min_fuzzy_chars")
    options_share: float = default("leak_guard.options_share")
    min_option_chars: int = default("leak_guard.min_option_chars")
    options_question_share: float = default("leak_guard.options_question_share")
    min_all_options_chars: int = default("leak_guard.min_all_options_chars")
    min_strong_option_chars: int = default("leak_guard.min_strong_option_chars")
    min_ngram_letters: int = default("leak_guard.min_ngram_letters")
    candidate_share: float = default("leak_guard.candidate_share")
    common_df: int = default("leak_guard.common_df")

    def validate(self) -> None:
        if self.ngram_n < 4 or not 2 <= self.shingle_n <= min(3, self.ngram_n):
            raise ValueError("leak_guard: need ngram_n >= 4 and shingle_n 2 or 3")
        for name in ("containment", "options_share", "options_question_share", "candidate_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"leak_guard.{name} must be in (0, 1]")
        if not 0 < self.fuzzy <= 100:
            raise ValueError("leak_guard.fuzzy must be in (0, 100]")
        if self.min_ngram_letters > self.ngram_n:
            raise ValueError("leak_guard.min_ngram_letters must not exceed ngram_n")


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


def content_letters(text: str) -> int:
    """Letters that carry content in a normalised text: CJK and other letters except count and
    unit characters, and Latin letters in runs of 3 or more; digits and symbols count nothing."""
    n = sum(len(run) for run in _LATIN_RUN.findall(text) if len(run) >= 3 and not _is_unit(run))
    for ch in text:
        if not ch.isascii() and ch not in UNIT_CHARS and unicodedata.category(ch).startswith("L"):
            n += 1
    return n


def _is_unit(run: str) -> bool:
    """A Latin letter run that is a unit or the cut-off start or end of one (``mmh`` of ``mmhg``)."""
    return any(u.startswith(run) or u.endswith(run) for u in LATIN_UNITS)


def _latin_or_digit(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


# -- exact packing of shingles into integers ------------------------------------------------------
# A code point needs 21 bits: three of them fill 63 bits of a uint64; a text of 1 or 2 characters
# (a short option or question, looked up whole) is tagged in the top bit(s) so no key is shared.
_TAG2 = np.uint64(1 << 63)
_TAG1 = np.uint64((1 << 63) | (1 << 62))


def _codes(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)


def _pack(cp: np.ndarray, n: int) -> np.ndarray:
    """Keys of the ``n``-character windows of the code points ``cp`` (0 is a separator: windows
    holding it are marked with key 0)."""
    if len(cp) < n:
        return np.zeros(0, dtype=np.uint64)
    m = len(cp) - n + 1
    if n == 3:
        keys = (cp[:m] << np.uint64(42)) | (cp[1 : m + 1] << np.uint64(21)) | cp[2 : m + 2]
        bad = (cp[:m] == 0) | (cp[1 : m + 1] == 0) | (cp[2 : m + 2] == 0)
    elif n == 2:
        keys = _TAG2 | (cp[:m] << np.uint64(21)) | cp[1 : m + 1]
        bad = (cp[:m] == 0) | (cp[1 : m + 1] == 0)
    else:
        keys = _TAG1 | cp[:m]
        bad = cp[:m] == 0
    keys[bad] = 0
    return keys


_HASH_BASE = np.uint64(0x100000001B3)
# A bitmap of 2**22 slots in front of each binary search: most of a sample's windows are no item's
# key, and one byte read rules them out (a slot shared by a key only sends the window on to the search).
_BITS = 22
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _slots(keys: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return ((keys * _MIX) >> np.uint64(64 - _BITS)).astype(np.int64)


def _bitmap(keys: np.ndarray) -> np.ndarray:
    bm = np.zeros(1 << _BITS, dtype=bool)
    bm[_slots(keys)] = True
    return bm


def _lookup(sorted_keys: np.ndarray, bitmap: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indexes into ``queries``, their positions in ``sorted_keys``) of the queries that are keys."""
    if not len(sorted_keys) or not len(queries):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    maybe = np.flatnonzero(bitmap[_slots(queries)])
    pos = np.searchsorted(sorted_keys, queries[maybe])
    pos[pos == len(sorted_keys)] = 0
    hit = sorted_keys[pos] == queries[maybe]
    return maybe[hit], pos[hit]


def _window_hash(cp: np.ndarray, n: int) -> np.ndarray:
    """A polynomial hash (mod 2**64) of every ``n``-character window of the code points: equal
    windows hash equally; the rare unequal ones that collide are told apart by the exact check."""
    m = len(cp) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = h * _HASH_BASE + cp[j : j + m]
    return h


def _text_keys(text: str, n: int) -> set[int]:
    """The shingle keys of one item text; a text shorter than ``n`` is its own (tagged) key."""
    if not text:
        return set()
    k = min(n, len(text))
    return {int(x) for x in _pack(_codes(text), k)}


class _Postings:
    """Sorted shingle keys -> the items holding them (CSR), rare shingles only, and per item the
    number of its rare shingles."""

    def __init__(self, per_item: list[set[int]], common_df: int, n_items: int):
        table: dict[int, list[int]] = {}
        for idx, keys in enumerate(per_item):
            for k in keys:
                table.setdefault(k, []).append(idx)
        rare = sorted((k, ids) for k, ids in table.items() if len(ids) <= common_df)
        self.keys = np.array([k for k, _ in rare], dtype=np.uint64)
        sizes = np.array([len(ids) for _, ids in rare], dtype=np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.items = np.array([i for _, ids in rare for i in ids], dtype=np.int64)
        self.rare = np.bincount(self.items, minlength=n_items).astype(np.int64)
        self.bitmap = _bitmap(self.keys)
        self.lengths = sorted({1 if k >> 62 == 3 else 2 if k >> 63 else 3 for k in self.keys.tolist()})

    def counts(self, sample_ids: np.ndarray, keys: np.ndarray, n_items: int) -> tuple[np.ndarray, ...]:
        """(sample, item, shared rare shingles) for every pair sharing one, from the (sample, key)
        pairs of every window of the samples."""
        empty = np.zeros(0, dtype=np.int64)
        if not len(self.keys) or not len(keys):
            return empty, empty, empty
        found, pos = _lookup(self.keys, self.bitmap, keys)
        # distinct (sample, shingle) pairs: a shingle twice in a sample counts once
        code = np.unique(sample_ids[found] * len(self.keys) + pos)
        sid, pos = code // len(self.keys), code % len(self.keys)
        if not len(pos):
            return empty, empty, empty
        starts, ends = self.indptr[pos], self.indptr[pos + 1]
        lens = ends - starts
        rep_sid = np.repeat(sid, lens)
        offs = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        items = self.items[np.repeat(starts, lens) + offs]
        pair, cnt = np.unique(rep_sid * n_items + items, return_counts=True)
        return pair // n_items, pair % n_items, cnt


@dataclass
class _Sample:
    """One sample as the scorer reads it: tokens, letters, and (lazily) where tokens begin."""

    texts: list[str]
    text: str  # letters only, segments joined with _SEP
    shingle_n: int
    _breaks: set[int] | None = None
    _shingles: set[str] | None = None

    @property
    def shingles(self) -> set[str]:
        if self._shingles is None:
            self._shingles = char_ngrams(self.text.split(_SEP), self.shingle_n)
        return self._shingles

    def breaks(self) -> set[int]:
        """Positions in ``text`` where a token begins (a space or a segment boundary before it)."""
        if self._breaks is None:
            out, pos = {0}, 0
            for t in self.texts:
                for tok in t.split(" "):
                    if tok:
                        out.add(pos)
                        pos += len(tok)
                        out.add(pos)
                pos += 1  # the separator
                out.add(pos)
            self._breaks = out
        return self._breaks


@dataclass(frozen=True)
class _Option:
    letters: str  # normalised, no spaces
    strong: bool  # carries min_strong_option_chars content letters
    bound_start: bool  # begins with a Latin letter or digit: needs a token boundary there
    bound_end: bool
    tiny: bool = False  # shorter than min_option_chars: counts only as a whole token (``A. 肝``)


class ContentGuard:
    """The text checks against every benchmark item; :meth:`check` scores one sample,
    :meth:`check_many` a batch (the candidate lookup vectorised over the batch)."""

    def __init__(self, items: list[BenchmarkItem], settings: GuardSettings | None = None):
        from rapidfuzz import fuzz

        self._partial_ratio = fuzz.partial_ratio
        self.settings = s = settings or GuardSettings()
        s.validate()
        self.items = items
        self.questions = [it.segments[0] if it.segments else "" for it in items]
        self.options: list[list[_Option]] = []
        for it in items:
            opts = []
            for o in it.segments[1:]:
                if o:
                    strong = len(o) >= s.min_option_chars and content_letters(o) >= s.min_strong_option_chars
                    tiny = len(o) < s.min_option_chars
                    opts.append(_Option(o, strong, _latin_or_digit(o[0]), _latin_or_digit(o[-1]), tiny))
            self.options.append(opts)
        self.q_shingles = [char_ngrams([q], s.shingle_n) if len(q) >= s.shingle_n else {q} for q in self.questions]
        # exact n-grams of every segment that carry content letters -> items
        self.grams: dict[str, list[int]] = {}
        self.too_short_for_ngram = 0
        for idx, it in enumerate(items):
            grams = char_ngrams(it.segments, s.ngram_n)
            if not grams:
                self.too_short_for_ngram += 1
            for g in grams:
                if content_letters(g) >= s.min_ngram_letters:
                    self.grams.setdefault(g, []).append(idx)
        n = len(items)
        self.q_post = _Postings([_text_keys(q, s.shingle_n) for q in self.questions], s.common_df, n)
        self.o_post = _Postings(
            [set().union(*(_text_keys(o.letters, s.shingle_n) for o in opts if not o.tiny)) for opts in self.options],
            s.common_df,
            n,
        )
        self._lengths = sorted(set(self.q_post.lengths) | set(self.o_post.lengths))
        self._gram_hashes = np.unique(
            np.array([_window_hash(_codes(g), s.ngram_n)[0] for g in self.grams], dtype=np.uint64)
        )
        self._gram_bitmap = _bitmap(self._gram_hashes)

    # -- candidates and exact n-grams, a batch at a time ------------------------------------------------
    def _candidates(self, cp: np.ndarray, owner: np.ndarray, n_samples: int) -> list[set[int]]:
        """Per sample, the items it shares enough rare shingles with (``cp``: the batch's code
        points, samples and segments separated by 0; ``owner``: the sample of each position)."""
        s = self.settings
        n_items = len(self.items)
        out: list[set[int]] = [set() for _ in range(n_samples)]
        keys, sids = [], []
        for n in self._lengths:
            k = _pack(cp, n)
            keys.append(k)
            sids.append(owner[: len(k)])
        k = np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64)
        sid = np.concatenate(sids) if sids else np.zeros(0, dtype=np.int64)
        keep = k != 0
        k, sid = k[keep], sid[keep]
        for post, share in ((self.q_post, s.candidate_share), (self.o_post, OPTION_CANDIDATE_SHARE)):
            js, items, cnt = post.counts(sid, k, n_items)
            ok = cnt >= np.maximum(1, share * post.rare[items])
            for j, i in zip(js[ok].tolist(), items[ok].tolist()):
                out[j].add(i)
        return out

    def _exact(self, big: str, cp: np.ndarray, owner: np.ndarray, n_samples: int) -> list[dict[int, Hit]]:
        """Per sample, the items it shares a counted n-gram with: a rolling hash of every window
        finds the few that may match, each verified by comparing the characters themselves."""
        out: list[dict[int, Hit]] = [{} for _ in range(n_samples)]
        n = self.settings.ngram_n
        if not self.grams or len(cp) < n:
            return out
        h = _window_hash(cp, n)
        zeros = np.concatenate([[0], np.cumsum(cp == 0)])
        valid = (zeros[n:] - zeros[:-n]) == 0
        found, _ = _lookup(self._gram_hashes, self._gram_bitmap, h)
        for at in found[valid[found]].tolist():
            gram = big[at : at + n]
            for idx in self.grams.get(gram, ()):
                out[int(owner[at])].setdefault(idx, Hit(idx, "exact_ngram", 1.0, gram))
        return out

    # -- exact scoring --------------------------------------------------------------------------------
    def _found(self, opt: _Option, smp: _Sample) -> int:
        """Position of the first occurrence of the option as an option (at token boundaries where
        it begins or ends with a Latin letter or a digit), or -1."""
        at = smp.text.find(opt.letters)
        while at >= 0:
            if self._found_at(opt, smp, at):
                return at
            at = smp.text.find(opt.letters, at + 1)
        return -1

    def _found_at(self, opt: _Option, smp: _Sample, at: int) -> bool:
        text, end = smp.text, at + len(opt.letters)
        if opt.tiny and not (at in smp.breaks() and (end == len(text) or end in smp.breaks())):
            return False
        if opt.bound_start and at > 0 and _latin_or_digit(text[at - 1]) and at not in smp.breaks():
            return False
        if opt.bound_end and end < len(text) and _latin_or_digit(text[end]) and end not in smp.breaks():
            return False
        return True

    def _lettered(self, at: int, smp: _Sample) -> bool:
        """The option at ``at`` follows an answer letter or number token (``A.``, ``b)``, ``3、``)."""
        br = smp.breaks()
        return at >= 1 and at in br and (at - 1) in br and smp.text[at - 1] in LETTER_MARKS

    def _contained_nearby(self, idx: int, smp: _Sample, need: int) -> bool:
        """``need`` distinct shingles of the question occur within a window of CONTAINMENT_WINDOW
        times its length: the copy's shingles stand together, not scattered over a long text."""
        q = self.questions[idx]
        n = self.settings.shingle_n
        events = []
        for sh in self.q_shingles[idx] & smp.shingles:
            at = smp.text.find(sh)
            while at >= 0:
                events.append((at, sh))
                at = smp.text.find(sh, at + 1)
        events.sort()
        width = CONTAINMENT_WINDOW * len(q)
        seen: dict[str, int] = {}
        lo = 0
        for pos, sh in events:
            seen[sh] = seen.get(sh, 0) + 1
            while events[lo][0] < pos + n - width:
                old = events[lo][1]
                seen[old] -= 1
                if not seen[old]:
                    del seen[old]
                lo += 1
            if len(seen) >= need:
                return True
        return False

    def _near(self, opt: _Option, smp: _Sample, start: int, end: int, reach: int) -> bool:
        """The option occurs (as an option) within ``reach`` characters of ``[start, end)``."""
        at = smp.text.find(opt.letters, max(0, start - reach - len(opt.letters)))
        while 0 <= at <= end + reach:
            if self._found_at(opt, smp, at):
                return True
            at = smp.text.find(opt.letters, at + 1)
        return False

    def _score(self, idx: int, smp: _Sample) -> Hit | None:
        s = self.settings
        q = self.questions[idx]
        qsh = self.q_shingles[idx]
        contained = len(qsh & smp.shingles) / len(qsh) if qsh and len(q) >= s.shingle_n else 0.0
        long_q = len(q) >= s.min_containment_chars
        if long_q and contained >= s.containment:
            need = int(np.ceil(s.containment * len(qsh) - 1e-9))
            if self._contained_nearby(idx, smp, need):
                return Hit(idx, "containment", contained)
        if len(q) >= s.min_fuzzy_chars:
            ratio = self._partial_ratio(q, smp.text, score_cutoff=s.fuzzy)
            if ratio:
                return Hit(idx, "fuzzy", ratio)
        opts = self.options[idx]
        where = {o.letters: self._found(o, smp) for o in opts} if opts else {}
        found = [o for o in opts if where[o.letters] >= 0]
        if SHORT_QUESTION_MIN <= len(q) < s.min_containment_chars and found:
            at = smp.text.find(q)
            reach = 4 * len(q) + OPTION_SPAN_SLACK
            while at >= 0:
                near = [o for o in found if self._near(o, smp, at, at + len(q), reach)]
                if any(o.strong for o in near) or len(near) * 2 >= len(opts):
                    return Hit(idx, "short_question", 1.0, ",".join(o.letters for o in near))
                at = smp.text.find(q, at + 1)
        if len(opts) >= 2 and len(found) >= 2:
            detail = ",".join(o.letters for o in found)
            # rule 1: most options, with half of the question
            # (a quarter of the question where the options stand after answer letters)
            starts = [where[o.letters] for o in found]
            lettered = sum(self._lettered(st, smp) for st in starts) * 2 >= len(found)
            share = s.options_question_share / 2 if lettered else s.options_question_share
            if len(found) >= max(2, s.options_share * len(opts)) and contained >= share:
                return Hit(idx, "options", len(found) / len(opts), detail)
            # rule 2: every option of 3+, close together, three of them carrying text
            strong = [o for o in found if o.strong]
            if len(found) == len(opts) >= 3 and len(strong) >= 3:
                if sum(len(o.letters) for o in strong) >= s.min_all_options_chars:
                    span = max(st + len(o.letters) for st, o in zip(starts, found)) - min(starts)
                    letters = sum(len(o.letters) for o in found)
                    evidence = lettered or contained >= OPTIONS_TRACE or letters >= OPTIONS_LONG
                    if span <= 4 * letters + OPTION_SPAN_SLACK and evidence:
                        return Hit(idx, "options", 1.0, detail)
        return None

    def check_many(self, samples: list[list[str]]) -> list[list[Hit]]:
        """:meth:`check` of each sample (its texts as tokens, :func:`evalsel.guard.leak.sample_texts`;
        letters-only segments work too, without token boundaries), in one lookup for the batch."""
        if not samples:
            return []
        s = self.settings
        parsed = [_Sample(texts, _SEP.join(t.replace(" ", "") for t in texts), s.shingle_n) for texts in samples]
        big = "".join(smp.text + _SEP for smp in parsed)
        cp = _codes(big)
        lengths = np.array([len(smp.text) + 1 for smp in parsed], dtype=np.int64)
        owner = np.repeat(np.arange(len(parsed), dtype=np.int64), lengths)
        exact = self._exact(big, cp, owner, len(parsed))
        cands = self._candidates(cp, owner, len(parsed)) if self.items else [set() for _ in parsed]
        out = []
        for smp, hits, cand in zip(parsed, exact, cands):
            for idx in sorted(cand):
                if idx not in hits:
                    hit = self._score(idx, smp)
                    if hit is not None:
                        hits[idx] = hit
            out.append(sorted(hits.values(), key=lambda h: h.item))
        return out

    def check(self, texts: list[str]) -> list[Hit]:
        """Every (item, reason) the sample is dropped for, best reason per item."""
        return self.check_many([texts])[0]

    def hits_of(self, positions: list[int], records: dict[int, dict], batch: int = 1024) -> dict[int, list[Hit]]:
        """``{position: hits}`` of the pool samples ``records[position]`` that fail, checked ``batch``
        at a time (recall's candidates and an SFT set's samples go through this one loop)."""
        out: dict[int, list[Hit]] = {}
        for lo in range(0, len(positions), batch):
            chunk = positions[lo : lo + batch]
            for p, hits in zip(chunk, self.check_many([sample_texts(records[p]) for p in chunk])):
                if hits:
                    out[p] = hits
        return out


def rows_above(vectors: np.ndarray, queries: np.ndarray, threshold: float, batch: int = 4096):
    """``(row, query indices, similarities)`` of every row of ``vectors`` whose cosine with a
    benchmark query exceeds ``threshold`` (unit vectors), ``batch`` rows at a time: the guard's
    max_similarity check, one implementation for recall and the SFT sets."""
    for lo in range(0, len(vectors), batch):
        sims = vectors[lo : lo + batch] @ queries.T
        for j in np.flatnonzero(sims.max(axis=1) > threshold):
            qs = np.flatnonzero(sims[j] > threshold)
            yield lo + int(j), qs, sims[j, qs]
