"""The contamination guard over finished SFT sets, for the transfer benchmarks (rule transfer_guard):
a benchmark that played no part in selection is checked against what was trained on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from evalsel.core.chat import sft_messages
from evalsel.core.io import read_jsonl, write_json
from evalsel.guard.check import ContentGuard, GuardSettings, guard_settings
from evalsel.guard.leak import light_normalise, load_benchmark_items

log = logging.getLogger(__name__)


def sft_texts(record: dict, path=None, line=None) -> list[str]:
    """The texts of one SFT-file record (ShareGPT, or alpaca with its history), what is trained on,
    as tokens (:func:`evalsel.guard.leak.light_normalise`)."""
    return [t for t in (light_normalise(m["content"]) for m in sft_messages(record, path, line)) if t]


def scan_sft_files(sft_paths: list, benchmark_files: list, settings: GuardSettings | None = None) -> dict:
    """The guard run over finished SFT files against a benchmark that did not take part in their
    selection (a transfer benchmark): ``{"items", "checked", "contaminated": {item id: [drops]}}``.

    The report leaves every item any arm's set matches out, for every model alike, so that the
    paired comparisons stay paired and no score rests on an answer that was in the training data.
    """
    items = load_benchmark_items(benchmark_files)
    guard = ContentGuard(items, settings)
    contaminated: dict[str, list[dict]] = {}
    checked = 0
    for path in sft_paths:
        arm = Path(path).stem
        records = list(read_jsonl(path))
        checked += len(records)
        for lo in range(0, len(records), 1024):
            chunk = records[lo : lo + 1024]
            for (_, rec), hits in zip(chunk, guard.check_many([sft_texts(r, path, n) for n, r in chunk])):
                for hit in hits:
                    contaminated.setdefault(items[hit.item].id, []).append(
                        {"arm": arm, "sample_id": rec.get("id"), **hit.record(items)}
                    )
    return {
        "items": len(items),
        "checked": checked,
        "contaminated_items": len(contaminated),
        "contaminated": dict(sorted(contaminated.items())),
    }


def run_transfer_guard(sft_paths: list, benchmark_files: list, out_path, leak_guard: dict | None = None) -> dict:
    """:func:`scan_sft_files` written to ``out_path`` (atomically); returns it."""
    report = scan_sft_files(sft_paths, benchmark_files, guard_settings(leak_guard))
    write_json(out_path, report)
    log.info(
        "%d of %d items matched by a training sample (left out of the report's comparisons)",
        report["contaminated_items"],
        report["items"],
    )
    return report
