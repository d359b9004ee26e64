"""File helpers shared by every step: strict JSONL reading, atomic writes, logging.

Every artifact is written through :func:`atomic_write` so that a killed job never
leaves a half-written file that a rerun would trust.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("evalsel")

_UMASK = os.umask(0)
os.umask(_UMASK)


class InputError(ValueError):
    """Bad user input. The message names the file, the line and the field."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, field: str | None, problem: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")


class Unreadable:
    """A record that could not be read (bad bytes or bad JSON): ``reason`` counts it, ``problem`` says why."""

    __slots__ = ("reason", "problem")

    def __init__(self, reason: str, problem: str):
        self.reason, self.problem = reason, problem

    def __repr__(self) -> str:
        return f"Unreadable({self.reason!r}, {self.problem!r})"


# Encodings worth naming when a file is not UTF-8 (Chinese files are usually GBK/GB18030).
_GUESSES = ("gb18030", "big5")


def guess_encoding(data: bytes) -> str | None:
    """UTF-16 when ``data`` opens with its byte-order mark, else the first of GB18030 (a superset
    of GBK) and Big5 that decodes it, or None."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    for enc in _GUESSES:
        try:
            data.decode(enc)
        except UnicodeDecodeError:
            continue
        return enc
    return None


def undecodable_problem(data: bytes, exc: UnicodeDecodeError, encoding: str) -> str:
    """Why a line cannot be decoded and what to do about it (never the line's text itself)."""
    guess = guess_encoding(data)
    hint = (
        f"; it looks like {guess.upper()}: convert it (iconv -f {guess} -t utf-8 IN > OUT) or set "
        f"'encoding: {guess}' on this source"
        if guess and guess != encoding
        else "; convert the file to UTF-8 or set this source's 'encoding'"
    )
    return f"not valid {encoding} (byte 0x{data[exc.start]:02x} at column {exc.start + 1})" + hint


def iter_text_lines(path: str | os.PathLike, encoding: str = "utf-8") -> Iterator[tuple[int, str | Unreadable]]:
    """Yield ``(line_number, text)`` of a text file decoded line by line (1-based, line end kept).

    A line that does not decode is yielded as :class:`Unreadable` (reason ``undecodable``) instead
    of ending the file with a bare ``UnicodeDecodeError``. A byte-order mark at the start of any
    line is dropped (files concatenated from Windows tools carry one per part).
    """
    codec = "utf-8" if encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig") else encoding
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError as exc:
                yield lineno, Unreadable("undecodable", undecodable_problem(raw, exc, encoding))
                continue
            yield lineno, text.lstrip("\ufeff")


def read_jsonl(
    path: str | os.PathLike, encoding: str = "utf-8", skip_unreadable: bool = False
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line_number, object)`` for each non-blank line; 1-based line numbers.

    Raises :class:`InputError` naming the file and line on malformed JSON or undecodable bytes;
    with ``skip_unreadable`` such a line is yielded as an :class:`Unreadable` for the caller to count.
    """
    path = Path(path)
    for lineno, line in iter_text_lines(path, encoding):
        if isinstance(line, Unreadable):
            if skip_unreadable:
                yield lineno, line
                continue
            raise InputError(path, lineno, None, line.problem)
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problem = f"malformed JSON ({exc.msg} at column {exc.colno})"
            if skip_unreadable:
                yield lineno, Unreadable("malformed_json", problem)
                continue
            raise InputError(path, lineno, None, problem) from None
        yield lineno, obj


def iter_csv(
    path: str | os.PathLike,
    encoding: str = "utf-8",
    delimiter: str = ",",
    skip_unreadable: bool = False,
    required: Iterable[str] = (),
) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, row dict)`` of a CSV/TSV file with a header, rows numbered by the line they start on.

    A header lacking a ``required`` column is an error at line 1. An undecodable line is an
    InputError naming file and line, or with ``skip_unreadable`` an :class:`Unreadable` (the line
    is left out of the CSV parse; safe unless it sat inside a quoted multi-line cell).
    """
    import csv

    path = Path(path)
    state = {"start": None, "pending": []}

    def feed():
        for lineno, text in iter_text_lines(path, encoding):
            if isinstance(text, Unreadable):
                if not skip_unreadable:
                    raise InputError(path, lineno, None, text.problem)
                state["pending"].append((lineno, text))
                continue
            if state["start"] is None and text.strip():
                state["start"] = lineno
            yield text

    reader = csv.DictReader(feed(), delimiter=delimiter)
    header = reader.fieldnames or []
    for col in required:
        if col not in header:
            raise InputError(path, 1, col, f"column not in the header (columns: {', '.join(header)})")
    state["start"] = None
    yield from state["pending"]
    state["pending"].clear()
    for row in reader:
        start, state["start"] = state["start"], None
        yield from state["pending"]
        state["pending"].clear()
        yield start, row
    yield from state["pending"]


def load_jsonl(path: str | os.PathLike) -> list[Any]:
    return [obj for _, obj in read_jsonl(path)]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts get the usual permissions
    try:
        if "b" in mode:
            fh = open(tmp, mode)
        else:
            fh = open(tmp, mode, encoding=encoding)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``out_dir``; on success it replaces ``out_dir``.

    A killed or failed job leaves no ``out_dir`` that a rerun would trust.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    try:
        yield tmp
        if out_dir.exists():  # the old output goes only once the new one is in place
            old = out_dir.with_name(f".{out_dir.name}.old.{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records atomically, one JSON object per line; returns the count."""
    n = 0
    with atomic_write(path) as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False))
            fh.write("\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj):
    # numpy scalars and arrays reach JSON as plain numbers and lists
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def text_hash(text: str, n: int = 16) -> str:
    """Stable hex id of a text (sha1, first ``n`` hex digits)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:n]


def setup_logging(log_file: str | os.PathLike | None = None, level: int = logging.INFO) -> logging.Logger:
    """Send the ``evalsel`` logger (and warnings, and stderr) to ``log_file`` and stderr.

    A Snakemake job passes ``snakemake.log[0]`` so a failed job explains itself.
    """
    root = logging.getLogger()
    root.setLevel(level)
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in list(root.handlers):
        root.removeHandler(h)
    stream = logging.StreamHandler(sys.__stderr__)
    stream.setFormatter(fmt)
    root.addHandler(stream)
    if log_file:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    logging.captureWarnings(True)
    return log


def smk_log_path(smk) -> str | None:
    """The first log file of a Snakemake job object, or None."""
    try:
        return smk.log[0] if len(smk.log) else None
    except AttributeError:
        return None


@contextlib.contextmanager
def job_logging(smk):
    """Context for a Snakemake script: logging and stderr (tqdm bars, warnings) go to the job's log.

    On an exception the traceback is written to the log before re-raising.
    """
    path = smk_log_path(smk)
    setup_logging(path)
    if path is None:
        yield log
        return
    with open(path, "a", encoding="utf-8", buffering=1) as err:
        old = sys.stderr
        sys.stderr = err
        try:
            yield log
        except BaseException:
            log.exception("job failed")
            raise
        finally:
            sys.stderr = old
