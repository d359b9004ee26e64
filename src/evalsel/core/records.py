"""The normalised benchmark files (``results/benchmark/*.jsonl``, written by benchmark_fetch): the
one reader every step uses. Apart from benchmark.py (which loads and normalises sources, hub
included) so that the jobs that only read these files do not depend on the loading code.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from evalsel.core.io import InputError, read_jsonl

LETTERS = "ABCDE"


def read_records(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, int, dict]]:
    """Yield ``(path, line, record)`` of normalised benchmark files (``results/benchmark/*.jsonl``).

    The one check of that format for every step that reads it: refuses (InputError with file,
    line and field) a record that is not an object, an empty or non-string id, subject, split or
    question, choices that are not 2 to 5 strings, an answer letter not among the options, and
    an id seen twice across ``paths``.
    """
    seen: dict[str, str] = {}
    for path in paths:
        for line, rec in read_jsonl(path):
            if not isinstance(rec, dict):
                raise InputError(path, line, None, "expected a JSON object")
            for key in ("id", "subject", "split", "question"):
                if not isinstance(rec.get(key), str) or not rec[key].strip():
                    raise InputError(path, line, key, "missing or not a non-empty string")
            choices = rec.get("choices")
            if (
                not isinstance(choices, list)
                or not 2 <= len(choices) <= 5
                or not all(isinstance(c, str) for c in choices)
            ):
                raise InputError(path, line, "choices", "must be a list of 2 to 5 strings")
            valid = LETTERS[: len(choices)]
            # null: a question that is never scored (a recall-only split); the evaluation refuses it
            if rec.get("answer") is not None and rec.get("answer") not in tuple(valid):
                raise InputError(
                    path, line, "answer", f"{rec.get('answer')!r} is not one of {', '.join(valid)} or null"
                )
            if rec["id"] in seen:
                raise InputError(path, line, "id", f"duplicate benchmark id {rec['id']!r} (first in {seen[rec['id']]})")
            seen[rec["id"]] = f"{path}:{line}"
            yield str(path), line, rec
