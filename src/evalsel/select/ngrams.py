"""Hashed n-gram features of text (DSIR's features, and the strategy-neutral space in which the
arms' training sets are compared).

A text is NFKC-normalised and case-folded, then cut into tokens: a run of ASCII letters and digits
is one token, every other letter or digit (a CJK character) is a token of its own, everything else
separates. Its features are the counts of its 1..n-grams of tokens hashed into ``buckets``,
computed for many texts at once with numpy (no Python loop over characters).
"""

from __future__ import annotations

import unicodedata

import numpy as np

_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_PRIME = np.uint64(0x100000001B3)
_WORD_CAP = 32  # characters of an ASCII word that enter its hash
_POW = np.array([pow(0x100000001B3, k, 1 << 64) for k in range(_WORD_CAP)], dtype=np.uint64)


def _alnum_table() -> np.ndarray:
    table = np.zeros(0x10000, dtype=bool)
    for cp in range(0x10000):
        table[cp] = chr(cp).isalnum()
    return table


_ALNUM = _alnum_table()


def normalise(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def tokens(text: str) -> list[str]:
    """The tokens of one text (reference implementation of what :func:`hashed_grams` hashes)."""
    out, word = [], ""
    for ch in normalise(text):
        if ch.isascii() and ch.isalnum():
            word += ch
            continue
        if word:
            out.append(word)
            word = ""
        if ch.isalnum():
            out.append(ch)
    if word:
        out.append(word)
    return out


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: spreads token hashes over the buckets."""
    h = h.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint64(30)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(27)
        h *= np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return h


def hashed_grams(texts: list[str], ngrams: int = 2, buckets: int = 65536) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(bucket, text index, tokens per text)`` of every 1..n-gram of every text, vectorised.

    A token's hash is a polynomial hash of its characters (its first 32 for long ASCII words); an
    n-gram's combines its tokens' hashes in order, then the splitmix64 finaliser picks a bucket.
    """
    n_texts = len(texts)
    if not n_texts:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.zeros(0, np.int64)
    joined = "\x00".join(normalise(t) for t in texts)
    cp = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    doc = np.cumsum(cp == 0)  # text index of each character (separators belong to the next)
    word = np.where(cp < 0x10000, _ALNUM[np.minimum(cp, 0xFFFF)], True)
    ascii_word = word & (cp < 128)
    prev_ascii = np.concatenate([[False], ascii_word[:-1]])
    start = word & ~(ascii_word & prev_ascii)  # a token starts here
    keep = np.flatnonzero(word)
    tok_of = np.cumsum(start)[keep] - 1  # token index of each kept character
    n_tok = int(tok_of[-1]) + 1 if len(keep) else 0
    tok_start = np.flatnonzero(start)
    pos_in_tok = keep - tok_start[tok_of]
    with np.errstate(over="ignore"):
        term = cp[keep].astype(np.uint64) * _POW[np.minimum(pos_in_tok, _WORD_CAP - 1)]
        term[pos_in_tok >= _WORD_CAP] = np.uint64(0)
        if n_tok:
            firsts = np.flatnonzero(np.concatenate([[True], tok_of[1:] != tok_of[:-1]]))
            tok_hash = np.add.reduceat(term, firsts)
        else:
            tok_hash = np.empty(0, np.uint64)
    tok_doc = doc[tok_start].astype(np.int64)
    per_text = np.bincount(tok_doc, minlength=n_texts).astype(np.int64)
    found, owners = [], []
    h = tok_hash.copy()
    for n in range(1, ngrams + 1):
        if n > 1:
            # n-gram hash: the (n-1)-gram hash at i combined with token i+n-1, within one text
            if len(h) <= 1:
                break
            with np.errstate(over="ignore"):
                h = (h[:-1] * _PRIME + _mix(tok_hash[n - 1 :])) & _M64
        docs = tok_doc[: len(h)]
        same = docs == tok_doc[n - 1 : n - 1 + len(h)]
        found.append((_mix(h[same]) % np.uint64(buckets)).astype(np.int64))
        owners.append(docs[same])
    return np.concatenate(found), np.concatenate(owners), per_text


def counts(texts: list[str], ngrams: int = 2, buckets: int = 65536) -> np.ndarray:
    """Hashed n-gram counts of ``texts`` together (the bag-of-n-grams model before normalising)."""
    b, _, _ = hashed_grams(texts, ngrams, buckets)
    return np.bincount(b, minlength=buckets).astype(np.float64)
