"""A listed arm: the pool samples whose ids a file names (strategy ``listed``). An oracle set for a
learnability ceiling, a hand-picked set, or a selection made by a tool outside the workflow; the
SFT job checks its samples with the same contamination guard as every arm's.

The file holds one pool id a line (the content hash ``pool_prepare`` gives each sample, see
``evalsel.data.pool.normalise_record``); blank lines and lines starting with ``#`` are skipped.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from evalsel.core.io import InputError, write_json, write_jsonl
from evalsel.data.poolindex import PoolIndex

log = logging.getLogger(__name__)


def read_ids(path: str | os.PathLike) -> tuple[list[tuple[int, str]], int]:
    """``([(line, id), ...], repeated)``: the ids in file order, each once; ``repeated`` counts the
    lines that named an id again. Refuses a missing file and a file that names no id."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, None, "ids", "the ids file of a listed arm does not exist")
    out, seen, repeated = [], set(), 0
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            sid = line.strip()
            if not sid or sid.startswith("#"):
                continue
            if sid in seen:
                repeated += 1
                continue
            seen.add(sid)
            out.append((lineno, sid))
    if not out:
        raise InputError(path, None, "ids", "names no pool id (one id a line)")
    return out, repeated


def listed_job(
    *,
    ids_path: str | os.PathLike,
    pool_shards: list[str | os.PathLike],
    selected_path: str | os.PathLike,
    statistics_path: str | os.PathLike,
) -> dict:
    """Write the listed samples as a selection (``id``, ``source``, ``rank`` in file order) and its
    statistics; returns the statistics. Refuses an id that is not in the pool, naming its line."""
    t0 = time.monotonic()
    ids, repeated = read_ids(ids_path)
    pool = PoolIndex.from_shards(pool_shards)
    positions = []
    for lineno, sid in ids:
        pos = pool.position.get(sid)
        if pos is None:
            raise InputError(ids_path, lineno, "id", f"{sid!r} is not a sample of the prepared pool")
        positions.append(pos)
    records = pool.fetch(positions)
    rows = [
        {
            "id": records[p]["id"],
            "source": records[p]["source"],
            "subject": None,
            "query_id": None,
            "similarity": None,
            "rank": rank,
        }
        for rank, p in enumerate(positions, start=1)
    ]
    write_jsonl(selected_path, rows)
    stats = {
        "strategy": "listed",
        "settings": {"ids": str(ids_path)},
        "pool": {"samples": pool.size, "repeated_ids": pool.n_duplicates, "files": len(pool.files)},
        "overall": {"listed": len(ids) + repeated, "repeated_lines": repeated, "kept": len(rows)},
        "guard_drops": [],
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, stats)
    log.info("listed: %d samples of %s", len(rows), ids_path)
    return stats
