"""The RL stage's prompts (rule rl_prompts): the labelled questions of the RL splits, asked as the
evaluation asks them, checked by the contamination guard against the scored questions."""

from __future__ import annotations

import logging
import os
from collections import Counter

from evalsel.core.chat import question_messages
from evalsel.core.io import InputError, write_json, write_jsonl
from evalsel.core.records import read_records

log = logging.getLogger(__name__)


def build_rl_prompts(
    rl_paths: list[str | os.PathLike],
    scored_paths: list[str | os.PathLike],
    rl_splits: list[str],
    eval_splits: list[str],
    out_path: str | os.PathLike,
    stats_path: str | os.PathLike,
    language: str = "zh",
    guard: dict | None = None,
) -> dict:
    """Write the RL prompts (JSONL) from the questions of ``rl_splits`` in ``rl_paths``, checked
    against the questions of ``eval_splits`` in ``scored_paths`` (the normalised benchmark files).

    Refuses (InputError with file, line and field, before any model is loaded): a split that is
    also scored, a question of an RL split without an answer, and no question at all. A question
    that the contamination guard matches to a scored question (same text, a near-copy) is left
    out and counted with the guard's reason, as is a question asked twice. The statistics JSON
    holds the counts per subject and every reason.
    """
    from evalsel.guard.check import ContentGuard, guard_settings
    from evalsel.guard.leak import item_of, light_normalise

    both = sorted(set(rl_splits) & set(eval_splits))
    if both:
        raise InputError(None, None, "rl.splits", f"{both} also scored (benchmark.eval_splits): RL would train on them")
    if not rl_splits:
        raise InputError(None, None, "rl.splits", "no split")
    scored = [rec for _, _, rec in read_records(scored_paths) if rec["split"] in eval_splits]
    rows = []
    for path, line, rec in read_records(rl_paths):
        if rec["split"] in rl_splits:
            if rec.get("answer") is None:
                raise InputError(
                    path,
                    line,
                    "answer",
                    f"question {rec['id']} of split {rec['split']!r} has no answer: the RL reward needs one "
                    "(rl.splits must name labelled splits, e.g. C-Eval's dev, not its test)",
                )
            rows.append(rec)
    if not rows:
        raise InputError(None, None, "rl.splits", f"no question of splits {rl_splits} in {[str(p) for p in rl_paths]}")
    checker = ContentGuard([item_of(r) for r in scored], guard_settings(guard))
    hits = checker.check_many([[light_normalise(r["question"]), *map(light_normalise, r["choices"])] for r in rows])
    reasons: Counter = Counter()
    drops, kept, seen = [], [], set()
    for rec, found in zip(rows, hits):
        key = light_normalise(rec["question"])
        if found:
            reason = f"guard:{found[0].reason}"
            drops.append({"id": rec["id"], "reason": reason, "scored_id": scored[found[0].item]["id"]})
        elif key in seen:
            reason = "duplicate_question"
            drops.append({"id": rec["id"], "reason": reason})
        else:
            seen.add(key)
            kept.append(rec)
            continue
        reasons[reason] += 1
    prompts = [
        {
            "id": r["id"],
            "subject": r["subject"],
            "split": r["split"],
            "prompt": question_messages(r, language=language),
            "choices": r["choices"],
            "answer": r["answer"],
        }
        for r in kept
    ]
    write_jsonl(out_path, prompts)
    stats = {
        "splits": list(rl_splits),
        "questions": len(rows),
        "prompts": len(prompts),
        "per_subject": dict(Counter(r["subject"] for r in kept)),
        "dropped": dict(reasons),
        "drops": drops,
        "scored_questions_checked": len(scored),
    }
    write_json(stats_path, stats)
    log.info("%d RL prompts of %d questions (%s dropped)", len(prompts), len(rows), dict(reasons) or "none")
    return stats
