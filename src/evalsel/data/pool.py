"""Fine-tuning pool preparation: detect each record's format (ShareGPT, OpenAI messages, alpaca,
question/answer), normalise it to one conversation schema with a content-hash id, drop exact
duplicates and unusable records (each counted with its reason), and write JSONL shards atomically.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evalsel.core.io import (
    InputError,
    Unreadable,
    atomic_dir,
    iter_csv,
    iter_text_lines,
    read_jsonl,
    text_hash,
    write_json,
)
from evalsel.core.settings import default

log = logging.getLogger(__name__)

FORMATS = ("sharegpt", "messages", "alpaca", "qa")
EMBED_TEXTS = ("prompt", "prompt_response")
ON_BAD_RECORD = ("error", "skip")
LOCAL_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv")

# Speaker names seen in the wild, mapped to the pool's two roles (plus system).
ROLES = {
    "human": "human",
    "user": "human",
    "gpt": "gpt",
    "assistant": "gpt",
    "chatgpt": "gpt",
    "bot": "gpt",
    "model": "gpt",
    "system": "system",
}


class SkipRecord(Exception):
    """A well-formed record that cannot be used (empty, too short, no answer...): always counted."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BadRecord(Exception):
    """A record that is not a valid sample of any (or of the forced) format: error or counted skip."""

    def __init__(self, reason: str, field: str | None, problem: str):
        super().__init__(problem)
        self.reason, self.field, self.problem = reason, field, problem


# --------------------------------------------------------------------------- format detection


def detect_format(record: Any) -> str | None:
    """The format of one raw record ("sharegpt", "messages", "alpaca", "qa"), or None."""
    if not isinstance(record, dict):
        return None
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "messages"
    if "instruction" in record and "output" in record:
        return "alpaca"
    if ("question" in record and "answer" in record) or ("query" in record and "response" in record):
        return "qa"
    return None


def _maybe_json(value: Any, field: str) -> Any:
    # CSV cells (and some parquet columns) hold nested lists as JSON text.
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise BadRecord("invalid_record", field, "not valid JSON text") from None
    return value


def _string(value: Any, field: str, parts: bool = False) -> str:
    """Text of a field; ``parts`` accepts OpenAI content parts (turn contents only)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if parts and isinstance(value, list):  # [{"type": "text", "text": ...}]
        parts = []
        for i, part in enumerate(value):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
            elif isinstance(part, str):
                parts.append(part)
            else:
                raise BadRecord("invalid_record", f"{field}[{i}]", "content part without text")
        return "".join(parts)
    raise BadRecord("invalid_record", field, f"expected text, got {type(value).__name__}")


def _turn_list(value: Any, field: str) -> list[tuple[str, str, str]]:
    """``[(role, text, field)]`` from a list of ``{from, value}`` or ``{role, content}`` turns."""
    value = _maybe_json(value, field)
    if not isinstance(value, list):
        raise BadRecord("invalid_record", field, f"expected a list of turns, got {type(value).__name__}")
    turns = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict):
            raise BadRecord("invalid_record", where, f"expected an object, got {type(turn).__name__}")
        role_key = "from" if "from" in turn else "role"
        text_key = "value" if "value" in turn else "content"
        role = turn.get(role_key)
        if not isinstance(role, str) or role.strip().lower() not in ROLES:
            raise BadRecord("invalid_record", f"{where}.{role_key}", f"unknown role {role!r}")
        turns.append(
            (ROLES[role.strip().lower()], _string(turn.get(text_key), f"{where}.{text_key}", parts=True), where)
        )
    return turns


def _alpaca_turns(record: dict) -> list[tuple[str, str, str]]:
    turns = []
    history = _maybe_json(record.get("history"), "history")
    if history:
        if not isinstance(history, list):
            raise BadRecord("invalid_record", "history", "expected a list of [prompt, response] pairs")
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise BadRecord("invalid_record", f"history[{i}]", "expected a [prompt, response] pair")
            turns.append(("human", _string(pair[0], f"history[{i}][0]"), f"history[{i}]"))
            turns.append(("gpt", _string(pair[1], f"history[{i}][1]"), f"history[{i}]"))
    instruction = _string(record.get("instruction"), "instruction").strip()
    extra = _string(record.get("input"), "input").strip()
    prompt = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    turns.append(("human", prompt, "instruction"))
    turns.append(("gpt", _string(record.get("output"), "output"), "output"))
    return turns


def _qa_turns(record: dict) -> list[tuple[str, str, str]]:
    q, a = ("question", "answer") if "question" in record else ("query", "response")
    return [("human", _string(record.get(q), q), q), ("gpt", _string(record.get(a), a), a)]


_REQUIRED = {
    "sharegpt": (("conversations",),),
    "messages": (("messages",),),
    "alpaca": (("instruction", "output"),),
    "qa": (("question", "answer"), ("query", "response")),
}


def _raw_turns(record: Any, fmt: str) -> tuple[str, list[tuple[str, str, str]]]:
    """``(format, turns)`` of a raw record; ``fmt`` "auto" detects it. Raises BadRecord."""
    if not isinstance(record, dict):
        raise BadRecord("unrecognised_format", None, f"expected an object, got {type(record).__name__}")
    if fmt == "auto":
        found = detect_format(record)
        if found is None:
            keys = ", ".join(sorted(map(str, record))[:8]) or "none"
            raise BadRecord(
                "unrecognised_format",
                None,
                f"unrecognised record (keys: {keys}); expected conversations, messages, "
                "instruction/output, question/answer or query/response",
            )
        fmt = found
    elif not any(all(k in record for k in keys) for keys in _REQUIRED[fmt]):
        want = " or ".join("/".join(keys) for keys in _REQUIRED[fmt])
        raise BadRecord("unrecognised_format", _REQUIRED[fmt][0][0], f"not a {fmt} record: needs {want}")
    if fmt == "sharegpt":
        turns = _turn_list(record["conversations"], "conversations")
    elif fmt == "messages":
        turns = _turn_list(record["messages"], "messages")
    elif fmt == "alpaca":
        turns = _alpaca_turns(record)
    else:
        turns = _qa_turns(record)
    return fmt, turns


def conversation_id(system: str, conversations: list[dict]) -> str:
    """sha1-16 of the canonical JSON of (system, conversations): equal samples get equal ids in any source."""
    canon = json.dumps(
        {"system": system, "conversations": conversations}, ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return text_hash(canon, 16)


def normalise_record(
    record: Any,
    fmt: str = "auto",
    *,
    source: str,
    medical: bool,
    origin: str = "",
    embed_text: str = default("pool.embed_text"),
    max_chars: int = default("pool.max_chars"),
    min_chars: int = default("pool.min_chars"),
    modified: Counter | None = None,
) -> dict:
    """One raw record as a pool sample ``{"id", "source", "medical", "system", "conversations", "text", "origin"}``.

    Turns are stripped; empty turns are dropped, consecutive turns of one speaker merged, leading
    assistant turns and a trailing user turn dropped, texts cut (each counted in ``modified``). Raises
    :class:`BadRecord` for an unrecognised or malformed record and :class:`SkipRecord` for an empty
    record, one without a user or an assistant turn, or one whose prompt or response is shorter
    than ``min_chars``.
    """
    modified = Counter() if modified is None else modified
    fmt, raw = _raw_turns(record, fmt)
    system_parts = [_string(record.get("system"), "system").strip()] if "system" in record else []
    turns: list[list[str]] = []
    for role, text, where in raw:
        text = text.strip()
        if role == "system":
            if turns:
                raise BadRecord("invalid_record", where, "system turn after the conversation started")
            system_parts.append(text)
            continue
        if not text:
            modified["empty_turns_dropped"] += 1
            continue
        if turns and turns[-1][0] == role:
            turns[-1][1] += "\n" + text
            modified["consecutive_turns_merged"] += 1
        else:
            turns.append([role, text])
    system = "\n".join(p for p in system_parts if p)
    if not turns:
        raise SkipRecord("empty")
    while turns and turns[0][0] == "gpt":
        turns.pop(0)
        modified["leading_assistant_turns_dropped"] += 1
    if not turns:
        raise SkipRecord("no_user_turn")
    if turns[-1][0] == "human":
        turns.pop()
        modified["trailing_user_turns_dropped"] += 1
    if not turns:
        raise SkipRecord("no_assistant_turn")
    prompt = "\n".join(t for r, t in turns if r == "human")
    response = "\n".join(t for r, t in turns if r == "gpt")
    if len(prompt) < min_chars:
        raise SkipRecord("too_short_prompt")
    if len(response) < min_chars:
        raise SkipRecord("too_short_response")
    conversations = [{"from": r, "value": t} for r, t in turns]
    text = prompt if embed_text == "prompt" else "\n".join(t for _, t in turns)
    if len(text) > max_chars:
        text = text[:max_chars]
        modified["text_truncated"] += 1
    return {
        "id": conversation_id(system, conversations),
        "source": source,
        "medical": bool(medical),
        "system": system,
        "conversations": conversations,
        "text": text,
        "origin": origin,
        "_format": fmt,  # popped by the writer; kept for the statistics
    }


# --------------------------------------------------------------------------- reading sources


def iter_local(
    path: str | os.PathLike, encoding: str = "utf-8", skip_unreadable: bool = False
) -> Iterator[tuple[str, int, Any]]:
    """Yield ``(file, line, record)`` from .jsonl/.csv (line numbers), .json/.parquet (record numbers, 1-based).

    Refuses a missing file, an unsupported extension, malformed JSON or bytes that do not decode
    in ``encoding`` (naming the line and the encoding the bytes look like), and a .json file that
    is not a list. With ``skip_unreadable`` an unreadable JSONL/CSV line comes as an
    :class:`~evalsel.core.io.Unreadable` record for the caller to count (a whole .json file cannot be skipped).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise InputError(path, None, None, "pool file not found")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        for line, obj in read_jsonl(path, encoding, skip_unreadable=skip_unreadable):
            yield where, line, obj
    elif suffix == ".json":
        # decoded line by line (a bad byte is named by its line), then parsed whole
        lines = []
        for lineno, text in iter_text_lines(path, encoding):
            if isinstance(text, Unreadable):
                raise InputError(path, lineno, None, text.problem)
            lines.append(text)
        text = "".join(lines)
        try:
            data = json.loads(text)  # a JSON list is read whole: large pools belong in JSONL or parquet
        except json.JSONDecodeError as exc:
            raise InputError(path, exc.lineno, None, f"malformed JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(data, list):
            raise InputError(path, None, None, f"expected a JSON list of records, got {type(data).__name__}")
        for i, obj in enumerate(data, start=1):
            yield where, i, obj
    elif suffix == ".csv":
        for line, row in iter_csv(path, encoding, skip_unreadable=skip_unreadable):
            yield where, line, row
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield where, n, row
    else:
        raise InputError(path, None, None, f"unsupported extension {suffix!r} (use {', '.join(LOCAL_SUFFIXES)})")


def iter_hf(
    hf_name: str,
    hf_config: str | None = None,
    split: str = "train",
    data_files: str | list[str] | None = None,
    mirror: str | os.PathLike | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """Yield ``("hf:name:split", index, record)`` from a streamed hub dataset (bounded memory).

    ``data_files`` (paths or globs inside the repository) are read with the packaged json/parquet/csv
    builder from ``hf://datasets/<name>/...`` (or ``<mirror>/<name>/...``): no loading script is
    ever looked up, which is how a repository like shibing624/medical (a ``medical.py`` beside its
    JSON-lines files) is read by datasets 4+. Without ``data_files`` the repository's own layout is
    used (repositories without a script). Every hub failure is one InputError saying what to set.
    """
    from evalsel.core import hub

    where = f"hf:{hf_name}:{split}"
    if data_files:
        ds = hub.load_files(
            hf_name, data_files, where=where, setting="hf_data_files", split=split, streaming=True, mirror=mirror
        )
    else:
        ds = hub.load_repo(
            hf_name, hf_config, where=where, setting="hf_data_files", split=split, streaming=True, mirror=mirror
        )
    rows = iter(ds)
    i = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except Exception as exc:  # files are read lazily: a bad file or a dropped connection shows here
            hint = (
                "; the records do not all share the columns datasets inferred from the first ones: "
                "give each kind of file its own source"
                if type(exc).__name__ == "CastError"
                else ""
            )
            raise InputError(
                where, i, None, f"reading the dataset failed: {type(exc).__name__}: {str(exc)[:300]}{hint}"
            ) from None
        yield where, i, row
        i += 1


# --------------------------------------------------------------------------- preparing a source


def _check_settings(
    source, path, hf_name, fmt, embed_text, on_bad_record, shard_size, max_chars, min_chars, max_samples
):
    key = f"pool.sources[{source}]"
    if bool(path) == bool(hf_name):
        raise InputError(None, None, key, "needs exactly one of 'path' and 'hf_name'")
    if path and Path(path).suffix.lower() not in LOCAL_SUFFIXES:
        raise InputError(path, None, f"{key}.path", f"unsupported extension (use {', '.join(LOCAL_SUFFIXES)})")
    checks = [
        (fmt in ("auto",) + FORMATS, f"{key}.format", f"{fmt!r} is not one of auto, {', '.join(FORMATS)}"),
        (embed_text in EMBED_TEXTS, "pool.embed_text", f"{embed_text!r} is not one of {', '.join(EMBED_TEXTS)}"),
        (on_bad_record in ON_BAD_RECORD, "pool.on_bad_record", f"{on_bad_record!r} is not one of error, skip"),
        (int(shard_size) >= 1, "pool.shard_size", "must be at least 1"),
        (int(max_chars) >= 1, "pool.max_chars", "must be at least 1"),
        (int(min_chars) >= 0, "pool.min_chars", "must be at least 0"),
        (max_samples is None or int(max_samples) >= 1, f"{key}.max_samples", "must be null or at least 1"),
    ]
    for ok, field, problem in checks:
        if not ok:
            raise InputError(None, None, field, problem)


class _ShardWriter:
    """Writes records into ``shard-NNNNN.jsonl`` files of ``size`` records; one file open at a time."""

    def __init__(self, directory: Path, size: int):
        self.directory, self.size = directory, size
        self.counts: list[int] = []
        self._fh = None

    def write(self, record: dict) -> None:
        if self._fh is None or self.counts[-1] >= self.size:
            self.close()
            self._fh = open(self.directory / f"shard-{len(self.counts):05d}.jsonl", "w", encoding="utf-8")
            self.counts.append(0)
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.counts[-1] += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    @property
    def names(self) -> list[str]:
        return [f"shard-{i:05d}" for i in range(len(self.counts))]


def run_pool_prepare(
    out_dir: str | os.PathLike,
    source: str,
    *,
    path: str | None = None,
    hf_name: str | None = None,
    hf_config: str | None = None,
    hf_data_files: str | list[str] | None = None,
    split: str = "train",
    fmt: str = "auto",
    medical: bool = True,
    max_samples: int | None = None,
    shard_size: int = default("pool.shard_size"),
    embed_text: str = default("pool.embed_text"),
    max_chars: int = default("pool.max_chars"),
    min_chars: int = default("pool.min_chars"),
    on_bad_record: str = default("pool.on_bad_record"),
    encoding: str = "utf-8",
    hub_mirror: str | os.PathLike | None = None,
) -> dict:
    """Read one pool source and write ``out_dir/shard-*.jsonl`` plus ``out_dir/manifest.json``; returns the manifest.

    Memory is bounded by one record plus the set of seen ids (exact duplicates are dropped by id).
    The directory appears only when complete (built in a temporary sibling, then renamed); a failed
    run leaves none. Refuses bad settings, a missing file, malformed JSON, an unrecognised or
    malformed record when ``on_bad_record`` is "error" (naming file, line and field), and a source
    from which no record is kept.
    """
    _check_settings(
        source, path, hf_name, fmt, embed_text, on_bad_record, shard_size, max_chars, min_chars, max_samples
    )
    out = Path(out_dir)
    tally = _PoolTally()
    where = path or f"hf:{hf_name}:{split}"
    settings = {
        "format": fmt,
        "embed_text": embed_text,
        "max_chars": int(max_chars),
        "min_chars": int(min_chars),
        "max_samples": max_samples,
        "on_bad_record": on_bad_record,
        "encoding": encoding,
    }
    with atomic_dir(out) as tmp:
        writer = _ShardWriter(tmp, int(shard_size))
        try:
            records = (
                iter_local(path, encoding, skip_unreadable=on_bad_record == "skip")
                if path
                else iter_hf(hf_name, hf_config, split, hf_data_files, mirror=hub_mirror)
            )
            with (
                contextlib.closing(records),
                tqdm(total=max_samples, desc=f"pool {source}", unit="rec", mininterval=5) as bar,
            ):
                for where, line, raw in records:
                    if max_samples is not None and tally.read >= max_samples:
                        break
                    tally.read += 1
                    bar.update(1)
                    rec = _prepare_one(raw, where, line, tally, source=source, medical=medical, **settings)
                    if rec is not None:
                        writer.write(rec)
            writer.close()
            if not tally.seen:
                what = "the source is empty" if tally.read == 0 else "every record was skipped"
                raise InputError(
                    where,
                    None,
                    None,
                    f"empty pool: {what}; no record kept out of {tally.read} read (skipped: {dict(tally.skipped) or 'none'})",
                )
            statistics = tally.statistics(writer.counts, settings)
            manifest = {"source": source, "count": len(tally.seen), "shards": writer.names, "statistics": statistics}
            write_json(tmp / "manifest.json", manifest)
        finally:
            writer.close()
    log.info(
        "%s: read %d, kept %d in %d shards; skipped %s; modified %s; formats %s",
        source,
        tally.read,
        len(tally.seen),
        len(writer.counts),
        dict(tally.skipped),
        dict(tally.modified),
        dict(tally.formats),
    )
    return manifest


def _prepare_one(raw, where: str, line, tally: _PoolTally, **settings) -> dict | None:
    """One raw record normalised and counted, or None (skipped, with its reason counted); a bad
    record raises :class:`InputError` naming file, line and field when ``on_bad_record`` is "error"."""
    origin = f"{where}:{line}"
    if isinstance(raw, Unreadable):  # bad bytes or bad JSON, with on_bad_record "skip"
        tally.skip(raw.reason, origin)
        return None
    changes: Counter = Counter()  # counted only for kept records
    try:
        rec = normalise_record(
            raw,
            settings["format"],
            source=settings["source"],
            medical=settings["medical"],
            origin=origin,
            embed_text=settings["embed_text"],
            max_chars=settings["max_chars"],
            min_chars=settings["min_chars"],
            modified=changes,
        )
    except BadRecord as exc:
        if settings["on_bad_record"] == "error":
            raise InputError(where, line, exc.field, exc.problem) from None
        reason = exc.reason
    except SkipRecord as exc:
        reason = exc.reason
    else:
        reason = "duplicate" if rec["id"] in tally.seen else None
    if reason is not None:
        tally.skip(reason, origin)
        return None
    tally.keep(rec, changes)
    return rec


class _PoolTally:
    """What one source's preparation read, kept and skipped (with the first origin of each reason)."""

    def __init__(self):
        self.read = 0
        self.skipped: Counter = Counter()
        self.modified: Counter = Counter()
        self.formats: Counter = Counter()
        self.first_skipped: dict[str, str] = {}
        self.turns: Counter = Counter()
        self.with_system = self.text_chars = 0
        self.seen: set[str] = set()

    def skip(self, reason: str, origin: str) -> None:
        self.skipped[reason] += 1
        self.first_skipped.setdefault(reason, origin)

    def keep(self, rec: dict, changes: Counter) -> None:
        self.seen.add(rec["id"])
        self.modified.update(changes)
        self.formats[rec.pop("_format")] += 1
        self.turns[len(rec["conversations"]) // 2] += 1
        self.with_system += bool(rec["system"])
        self.text_chars += len(rec["text"])

    def statistics(self, records_per_shard: list[int], settings: dict) -> dict:
        kept = len(self.seen)
        return {
            "read": self.read,
            "kept": kept,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": sum(self.skipped.values()),
            "first_skipped": dict(sorted(self.first_skipped.items())),
            "modified": dict(sorted(self.modified.items())),
            "formats": dict(sorted(self.formats.items())),
            "exchanges": {str(k): v for k, v in sorted(self.turns.items())},
            "with_system": self.with_system,
            "text_chars_mean": round(self.text_chars / kept, 1) if kept else 0.0,
            "records_per_shard": list(records_per_shard),
            "settings": settings,
        }


def load_pool_dir(out_dir: str | os.PathLike) -> Iterator[dict]:
    """Yield the records of a prepared source directory, shard by shard (for tests and later steps)."""
    out = Path(out_dir)
    with open(out / "manifest.json", encoding="utf-8") as fh:
        manifest = json.load(fh)
    for shard in manifest["shards"]:
        for _, rec in read_jsonl(out / f"{shard}.jsonl"):
            yield rec
