"""Benchmark loading: C-Eval from the Hugging Face hub or local JSONL/CSV files, normalised to
``{"id", "subject", "split", "question", "choices", "answer", "explanation"}`` and validated.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from evalsel.core.io import InputError, iter_csv, read_jsonl, write_jsonl
from evalsel.core.records import LETTERS

log = logging.getLogger(__name__)


DEFAULT_COLUMNS = {
    "id": "id",
    "question": "question",
    "answer": "answer",
    "options": ["A", "B", "C", "D", "E"],
    "explanation": "explanation",
}
DEFAULT_HF_NAME = "ceval/ceval-exam"


class _NoAnswer(Exception):
    """A row without an answer: fatal, but reported per split (C-Eval's hub test split has none)."""


def resolve_columns(columns: dict | None) -> dict:
    """The column mapping with defaults filled in. Refuses unknown keys and a bad ``options`` entry."""
    out = dict(DEFAULT_COLUMNS)
    for key, value in (columns or {}).items():
        if key not in DEFAULT_COLUMNS:
            raise InputError(
                None,
                None,
                f"benchmark.local.columns.{key}",
                f"unknown column key (known: {', '.join(DEFAULT_COLUMNS)})",
            )
        if value is not None:
            out[key] = value
    opts = out["options"]
    if isinstance(opts, str):
        return out  # one column holding the list of options
    opts = list(opts)
    if not 2 <= len(opts) <= len(LETTERS) or not all(isinstance(c, str) and c for c in opts):
        raise InputError(None, None, "benchmark.local.columns.options", f"need 2 to 5 column names, got {opts!r}")
    out["options"] = opts
    return out


def _text(value: Any) -> str:
    """A cell as stripped text; None (and float NaN from pandas-made files) is empty."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def _options(row: dict, columns: dict, where: str, line: int | None) -> list[str]:
    spec = columns["options"]
    if isinstance(spec, str):
        raw = row.get(spec)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except json.JSONDecodeError:
                raise InputError(where, line, spec, "options column is not a JSON list") from None
        if not isinstance(raw, (list, tuple)):
            raise InputError(where, line, spec, f"options column must hold a list, got {type(raw).__name__}")
        names = [f"{spec}[{i}]" for i in range(len(raw))]
        values = [_text(v) for v in raw]
    else:
        names = list(spec)
        values = [_text(row.get(c)) for c in spec]
        # an option column the mapping does not read (F after A-E, or E after A-D) would be lost
        mapped = {v for k, v in columns.items() if k != "options"} | set(spec)
        extra = sorted(
            k
            for k, v in row.items()
            if isinstance(k, str) and len(k) == 1 and k.isupper() and k not in mapped and _text(v)
        )
        if extra:
            raise InputError(
                where,
                line,
                extra[0],
                f"column {extra[0]!r} holds an option but the mapping reads only {', '.join(spec)}"
                + (
                    f"; at most {len(LETTERS)} options (A-E) are supported"
                    if len(spec) >= len(LETTERS)
                    else "; add it to benchmark.local.columns.options"
                ),
            )
    # Trailing empty options are absent options (a 3-option question in an A-D layout).
    while values and not values[-1]:
        values.pop()
    for name, value in zip(names, values):
        if not value:
            raise InputError(where, line, name, "option is empty but a later option is not")
    if len(values) < 2:
        raise InputError(where, line, "options", f"fewer than 2 options ({len(values)}) in columns {names}")
    if len(values) > len(LETTERS):
        raise InputError(where, line, "options", f"{len(values)} options; at most {len(LETTERS)} (A-E) are supported")
    return values


def normalise_row(
    row: Any,
    *,
    subject: str,
    split: str,
    columns: dict,
    where: str,
    line: int | None,
    position: int,
    unanswered_ok: bool = False,
) -> dict:
    """One benchmark row as a normalised record.

    ``where``/``line`` name the row in errors; ``position`` (0-based) is the id when the row has no
    id column. Refuses an empty question, fewer than 2 or more than 5 options, a gap in the options,
    and an answer letter that is not among the question's options. Raises ``_NoAnswer`` when the
    answer is empty (the caller decides whether the whole split lacks answers).
    """
    if not isinstance(row, dict):
        raise InputError(where, line, None, f"expected an object, got {type(row).__name__}")
    question = _text(row.get(columns["question"]))
    if not question:
        raise InputError(where, line, columns["question"], "missing or empty question")
    choices = _options(row, columns, where, line)
    answer = _text(row.get(columns["answer"])).upper()
    if not answer and not unanswered_ok:
        raise _NoAnswer()
    valid = tuple(LETTERS[: len(choices)])
    if not answer:  # a question that is never scored (a recall-only split such as C-Eval's test)
        answer = None
    elif len(answer) > 1 and all(ch in LETTERS for ch in answer):
        raise InputError(
            where,
            line,
            columns["answer"],
            f"answer {answer!r} names {len(answer)} options: multiple-answer questions are not "
            "supported (one letter per question)",
        )
    if answer is not None and answer not in valid:
        raise InputError(
            where,
            line,
            columns["answer"],
            f"answer {answer!r} is not among the question's options ({', '.join(valid)})",
        )
    orig_id = _text(row.get(columns["id"])) or str(position)
    return {
        "id": f"{subject}/{split}/{orig_id}",
        "subject": subject,
        "split": split,
        "question": question,
        "choices": choices,
        "answer": answer,
        "explanation": _text(row.get(columns["explanation"])),
    }


def normalise_split(
    rows: Iterable[tuple[int | None, Any]],
    *,
    subject: str,
    split: str,
    columns: dict,
    where: str,
    unanswered_ok: bool = False,
) -> list[dict]:
    """Normalise the ``(line, row)`` pairs of one split; shared by the hub and the local loaders.

    Refuses duplicate ids, a split without answers (e.g. C-Eval's public test split: it cannot be
    scored, so it cannot be a recall, eval or few-shot split), single rows without an answer, and an
    empty split.
    """
    records: list[dict] = []
    seen: dict[str, int | None] = {}
    missing: list[int | None] = []
    n = 0
    for position, (line, row) in enumerate(rows):
        n += 1
        try:
            rec = normalise_row(
                row,
                subject=subject,
                split=split,
                columns=columns,
                where=where,
                line=line,
                position=position,
                unanswered_ok=unanswered_ok,
            )
        except _NoAnswer:
            missing.append(line)
            continue
        if rec["id"] in seen:
            raise InputError(
                where, line, columns["id"], f"duplicate id {rec['id']!r} (first at line {seen[rec['id']]})"
            )
        seen[rec["id"]] = line
        records.append(rec)
    if n == 0:
        raise InputError(where, None, None, f"split {split!r} of {subject!r} has no rows")
    if len(missing) == n:
        raise InputError(
            where,
            None,
            columns["answer"],
            f"split {split!r} has no answers (C-Eval's public test split ships without them): it can be a "
            "recall split (benchmark.recall_splits) but not an eval or few-shot split",
        )
    if missing:
        raise InputError(
            where, missing[0], columns["answer"], f"missing or empty answer ({len(missing)} rows in this split)"
        )
    return records


def local_split_path(pattern: str, subject: str, split: str) -> Path:
    """The file of one subject and split. Refuses a pattern without ``{subject}`` and ``{split}``."""
    for key in ("{subject}", "{split}"):
        if key not in pattern:
            raise InputError(None, None, "benchmark.local.path", f"path pattern {pattern!r} lacks {key}")
    return Path(pattern.replace("{subject}", subject).replace("{split}", split))


def iter_table(
    path: str | os.PathLike, required: Iterable[str] = (), encoding: str = "utf-8"
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, row)`` from a JSONL, CSV or TSV file in ``encoding``.

    CSV rows are numbered by the line they start on; a header lacking a ``required`` column is an
    error at line 1. Refuses a missing file, other extensions, and bytes that do not decode (naming
    the line and the encoding they look like).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, None, "file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl(path, encoding)
    elif suffix in (".csv", ".tsv"):
        yield from iter_csv(path, encoding, delimiter="," if suffix == ".csv" else "\t", required=required)
    else:
        raise InputError(path, None, None, f"unsupported extension {suffix!r} (use .jsonl, .csv or .tsv)")


def load_local_split(
    pattern: str, subject: str, split: str, columns: dict, encoding: str = "utf-8", unanswered_ok: bool = False
) -> list[dict]:
    path = local_split_path(pattern, subject, split)
    required = [columns["question"]] + ([] if unanswered_ok else [columns["answer"]])
    return normalise_split(
        iter_table(path, required, encoding),
        subject=subject,
        split=split,
        columns=columns,
        where=str(path),
        unanswered_ok=unanswered_ok,
    )


DEFAULT_HF_DATA_FILES = "{subject}/{split}-*.parquet"


def load_hf_split(
    hf_name: str,
    subject: str,
    split: str,
    columns: dict,
    data_files: str = DEFAULT_HF_DATA_FILES,
    mirror: str | os.PathLike | None = None,
    unanswered_ok: bool = False,
) -> list[dict]:
    """One split of a hub dataset: the Parquet files ``data_files`` names (C-Eval's layout:
    ``<subject>/<split>-*.parquet``) read by the packaged parquet builder from the hub or ``mirror``."""
    from evalsel.core import hub

    where = f"hf:{hf_name}:{subject}:{split}"
    pattern = data_files.replace("{subject}", subject).replace("{split}", split)
    ds = hub.load_files(hf_name, pattern, where=where, setting="benchmark.hf_data_files", split=split, mirror=mirror)
    # Hub rows are numbered by index (0-based), as in pool origins "hf:name:split:index".
    return normalise_split(
        ((i, row) for i, row in enumerate(ds)),
        subject=subject,
        split=split,
        columns=columns,
        where=where,
        unanswered_ok=unanswered_ok,
    )


def load_benchmark(
    subject: str,
    splits: Iterable[str],
    source: str,
    hf_name: str | None = None,
    local_path: str | None = None,
    columns: dict | None = None,
    encoding: str = "utf-8",
    hf_data_files: str = DEFAULT_HF_DATA_FILES,
    hub_mirror: str | os.PathLike | None = None,
    unscored_splits: Iterable[str] = (),
) -> list[dict]:
    """Normalised records of ``subject`` for every split, in split order then file order.

    ``source`` is "hf" (``hf_name``, default ceval/ceval-exam) or "local" (``local_path`` pattern with
    ``{subject}`` and ``{split}``). Refuses an unknown source, no splits, and any bad row (see
    :func:`normalise_split`).
    """
    splits = list(splits)
    if not splits:
        raise InputError(None, None, "benchmark.splits", "no splits to load")
    cols = resolve_columns(columns)
    records: list[dict] = []
    unscored = set(unscored_splits)
    for split in splits:
        # a split that is never scored may lack answers (its questions are recall queries only)
        if source == "hf":
            part = load_hf_split(
                hf_name or DEFAULT_HF_NAME,
                subject,
                split,
                cols,
                hf_data_files,
                hub_mirror,
                unanswered_ok=split in unscored,
            )
        elif source == "local":
            if not local_path:
                raise InputError(None, None, "benchmark.local.path", "required when benchmark.source is 'local'")
            part = load_local_split(local_path, subject, split, cols, encoding, unanswered_ok=split in unscored)
        else:
            raise InputError(None, None, "benchmark.source", f"unknown source {source!r} (use 'hf' or 'local')")
        records.extend(part)
    return records


def write_benchmark(path: str | os.PathLike, records: list[dict]) -> int:
    """Write the records atomically as JSONL; returns the count."""
    return write_jsonl(path, records)


def run_benchmark_fetch(
    output: str | os.PathLike,
    subject: str,
    splits: Iterable[str],
    source: str,
    hf_name: str | None = None,
    local_path: str | None = None,
    columns: dict | None = None,
    encoding: str = "utf-8",
    hf_data_files: str = DEFAULT_HF_DATA_FILES,
    hub_mirror: str | os.PathLike | None = None,
    unscored_splits: Iterable[str] = (),
    id_prefix: str = "",
) -> list[dict]:
    """Load, validate and write ``results/benchmark/{subject}.jsonl``; returns the records.

    ``id_prefix`` (a transfer benchmark's ``<name>/``) keeps its ids apart from the recall benchmark's.

    Questions of ``unscored_splits`` (recall-only splits) may come without answers (``answer`` null)."""
    records = load_benchmark(
        subject,
        splits,
        source,
        hf_name=hf_name,
        local_path=local_path,
        columns=columns,
        encoding=encoding,
        hf_data_files=hf_data_files,
        hub_mirror=hub_mirror,
        unscored_splits=unscored_splits,
    )
    if id_prefix:
        for r in records:
            r["id"] = id_prefix + r["id"]
    per_split = Counter(r["split"] for r in records)
    n_options = Counter(len(r["choices"]) for r in records)
    answers = Counter(r["answer"] or "none" for r in records)
    log.info(
        "%s: %d questions %s; options per question %s; answers %s",
        subject,
        len(records),
        dict(per_split),
        dict(sorted(n_options.items())),
        dict(sorted(answers.items())),
    )
    write_benchmark(output, records)
    return records
