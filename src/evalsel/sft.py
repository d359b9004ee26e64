"""SFT sets of the two arms: eval-driven (recalled samples plus a random medical mix) and random
(the same number of samples or tokens drawn uniformly from the whole pool), both leak-guarded,
plus the contamination report of the final sets.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
from tqdm import tqdm

from . import leak
from .guard import ContentGuard, GuardSettings, guard_settings
from .io import InputError, read_json, read_jsonl, write_json, write_jsonl
from .recall import PoolIndex, load_queries

log = logging.getLogger(__name__)

FORMATS = ("sharegpt", "alpaca")
MATCHES = ("samples", "tokens")
# Independent random streams derived from the one configured seed.
_MIX, _RANDOM, _SHUFFLE_EVAL, _SHUFFLE_RANDOM = 1, 2, 3, 4


def mix_size(recalled: int, ratio: float) -> int:
    """Random samples to add to ``recalled`` ones so that they are ``ratio`` of the final set."""
    if not 0 <= ratio < 1:
        raise ValueError(f"random_mix_ratio must be in [0, 1), got {ratio}")
    return int(round(recalled * ratio / (1 - ratio)))


def to_sharegpt(rec: dict, origin: str) -> dict:
    out = {
        "id": rec["id"],
        "origin": origin,
        "conversations": [{"from": t["from"], "value": t["value"]} for t in rec["conversations"]],
    }
    if rec.get("system"):
        out["system"] = rec["system"]
    return out


def to_alpaca(rec: dict, origin: str) -> dict:
    """Last exchange as instruction/output, earlier exchanges as ``history`` [[user, assistant], ...].

    Refuses a conversation that does not alternate user/assistant turns from a user turn to an
    assistant turn (the pool's normal form).
    """
    conv = rec["conversations"]
    roles = [t["from"] for t in conv]
    if len(conv) % 2 or roles != ["human", "gpt"] * (len(conv) // 2):
        raise InputError(
            None,
            None,
            "conversations",
            f"sample {rec['id']} ({rec.get('origin', '')}): turns {roles} do not alternate human/gpt",
        )
    pairs = [[conv[i]["value"], conv[i + 1]["value"]] for i in range(0, len(conv), 2)]
    out = {"id": rec["id"], "origin": origin, "instruction": pairs[-1][0], "input": "", "output": pairs[-1][1]}
    if len(pairs) > 1:
        out["history"] = pairs[:-1]
    if rec.get("system"):
        out["system"] = rec["system"]
    return out


def conversation_text(rec: dict) -> str:
    return "\n".join([rec.get("system") or ""] + [t["value"] for t in rec["conversations"]]).strip()


def token_counter(tokenizer: str | None) -> tuple[str, Callable[[dict], int]]:
    """``(name, count)``: characters of the conversation, or tokens of the given tokenizer path/name."""
    if not tokenizer:
        return "characters", lambda rec: len(conversation_text(rec))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    return f"tokens:{tokenizer}", lambda rec: len(tok(conversation_text(rec), add_special_tokens=False)["input_ids"])


class Guard:
    """The contamination guard (evalsel.guard.ContentGuard: exact n-grams, containment, fuzzy and
    option matches against every benchmark item) plus cosine above ``max_similarity`` with any
    benchmark question that has a vector, applied to every sample entering a set."""

    def __init__(
        self,
        items,
        settings: GuardSettings,
        query_ids: list[str],
        queries: np.ndarray,
        max_similarity: float | None,
        pool: PoolIndex,
    ):
        self.items, self.content, self.pool = items, ContentGuard(items, settings), pool
        self.query_ids, self.queries, self.max_similarity = query_ids, queries, max_similarity

    def check(self, positions: list[int], records: dict[int, dict]) -> dict[int, list[dict]]:
        """``{position: [drop records]}`` for the samples that fail; one drop record per benchmark item."""
        out: dict[int, list[dict]] = {}
        for p in positions:
            hits = self.content.check(leak.sample_segments(records[p]))
            if hits:
                out[p] = [h.record(self.items) for h in hits]
        rest = [p for p in positions if p not in out]
        if self.max_similarity is not None and len(self.queries) and rest:
            for lo in range(0, len(rest), 4096):
                chunk = rest[lo : lo + 4096]
                sims = self.pool.gather(chunk) @ self.queries.T
                for j in np.flatnonzero(sims.max(axis=1) > self.max_similarity):
                    qs = np.flatnonzero(sims[j] > self.max_similarity)
                    out[chunk[j]] = [
                        {
                            "benchmark_id": self.query_ids[q],
                            "reason": "max_similarity",
                            "score": round(float(sims[j, q]), 6),
                        }
                        for q in qs
                    ]
        return out


def write_review(
    path: str | os.PathLike, dropped: list[dict], benchmark_files, pool: PoolIndex, seed: int, n: int = 20
) -> None:
    """``n`` random guard drops (seeded), each with the benchmark item it matched and the sample's
    text, as Markdown for a person to judge (false drops show here first)."""
    from .io import atomic_write
    from .records import read_records

    text_drops = [d for d in dropped if d["reason"] != "max_similarity"]
    rng = np.random.default_rng([seed, 7])
    picked = [text_drops[i] for i in sorted(rng.choice(len(text_drops), min(n, len(text_drops)), replace=False))]
    records = {rec["id"]: rec for _, _, rec in read_records(benchmark_files)}
    positions = [pool.position[d["sample_id"]] for d in picked if d["sample_id"] in pool.position]
    samples = {rec["id"]: rec for rec in pool.fetch(positions).values()}
    lines = [
        "# Contamination guard: drops to review",
        "",
        f"{len(picked)} of the {len(text_drops)} samples dropped by the text checks (exact_ngram, containment, "
        "fuzzy, options), drawn at random. Each: the benchmark item it matched, the reason and score, and the "
        "sample. A drop that is not a copy of the item is a false drop: tell the maintainers which.",
        "",
    ]
    for k, d in enumerate(picked, 1):
        item = records.get(d["benchmark_id"], {})
        sample = samples.get(d["sample_id"], {})
        turns = " / ".join(t["value"] for t in sample.get("conversations", []))
        options = "; ".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(item.get("choices", [])))
        lines += [
            f"## {k}. {d['reason']} (score {d.get('score')}), stage {d.get('stage')}",
            "",
            f"- item `{d['benchmark_id']}`: {item.get('question', '?')}  \n  options: {options}",
            f"- sample `{d['sample_id']}`: {turns[:400]}{'...' if len(turns) > 400 else ''}",
            "",
        ]
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")


def _draw(
    name: str,
    universe: np.ndarray,
    rng: np.random.Generator,
    pool: PoolIndex,
    guard: Guard,
    reject: Callable[[int, dict], str | None],
    done: Callable[[], bool],
    remaining: Callable[[], int],
    take: Callable[[int, dict], None],
    dropped: list[dict],
    progress: bool,
) -> dict:
    """Walk a seeded permutation of ``universe`` and ``take`` samples that pass ``reject`` and the
    guard until ``done``; records are fetched in batches sized to what is still missing."""
    order = rng.permutation(universe)
    counts: Counter = Counter()
    ptr, examined = 0, 0
    with tqdm(desc=f"draw {name}", unit="sample", disable=not progress, leave=False) as bar:
        while not done() and ptr < len(order):
            rate = max(0.05, 1 - sum(counts.values()) / examined) if examined else 1.0
            chunk = order[ptr : ptr + int(remaining() / rate * 1.2) + 64].tolist()
            ptr += len(chunk)
            records = pool.fetch(chunk)
            failed = guard.check(chunk, records)
            for p in chunk:
                if done():
                    break
                examined += 1
                rec = records[p]
                reason = reject(p, rec)
                if reason is None and p in failed:
                    reason = failed[p][0]["reason"]
                    dropped.extend({"sample_id": rec["id"], "stage": name, **d} for d in failed[p])
                if reason:
                    counts[reason] += 1
                    continue
                take(p, rec)
                bar.update(1)
    return {"examined": examined, "dropped": dict(sorted(counts.items()))}


def _read_recalled(recall_files, pool: PoolIndex) -> tuple[list[int], dict, int]:
    positions, seen, repeated = [], {}, 0
    for path in recall_files:
        for lineno, rec in read_jsonl(path):
            if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
                raise InputError(path, lineno, "id", "missing or not a string")
            pos = pool.position.get(rec["id"])
            if pos is None:
                raise InputError(
                    path, lineno, "id", f"{rec['id']!r} is not in the pool vectors: recall output is stale"
                )
            if pos in seen:
                repeated += 1
                continue
            seen[pos] = rec
            positions.append(pos)
    return positions, seen, repeated


def contamination_report(
    items: list[leak.BenchmarkItem],
    final: dict[int, dict],
    pool: PoolIndex,
    query_ids: list[str],
    queries: np.ndarray,
    dropped: list[dict],
    ngram_n: int,
    seed_n: int,
    recall_splits: list[str],
    eval_splits: list[str],
) -> dict:
    """Per benchmark item: the highest cosine (items with a vector) and the longest shared substring
    in the final sets, and the samples dropped for it. Raises RuntimeError if a final sample shares
    an ``ngram_n``-gram with an item (the guard must have removed it)."""
    by_id = sorted(final.items(), key=lambda kv: kv[1]["id"])
    longest = leak.longest_shared(items, ((rec["id"], leak.sample_segments(rec)) for _, rec in by_id), seed_n)
    bad = [(items[i].id, n, sid) for i, (n, sid) in enumerate(longest) if n >= ngram_n]
    if bad:
        raise RuntimeError(
            f"leak guard failure: final SFT samples share {ngram_n}+ characters with benchmark items: {bad[:5]}"
        )
    cos: dict[str, tuple[float, str]] = {}
    if len(queries) and by_id:
        positions = [p for p, _ in by_id]
        best = np.full(len(queries), -np.inf, dtype=np.float32)
        arg = np.zeros(len(queries), dtype=np.int64)
        for lo in range(0, len(positions), 8192):
            sims = queries @ pool.gather(positions[lo : lo + 8192]).T
            j = sims.argmax(axis=1)
            v = sims[np.arange(len(queries)), j]
            better = v > best
            best[better], arg[better] = v[better], j[better] + lo
        cos = {q: (round(float(best[n]), 6), by_id[arg[n]][1]["id"]) for n, q in enumerate(query_ids)}
    drops: dict[str, list[dict]] = {}
    for d in dropped:
        drops.setdefault(d["benchmark_id"], []).append({k: v for k, v in d.items() if k != "benchmark_id"})
    rows = []
    for it, (n, sid) in zip(items, longest):
        c = cos.get(it.id)
        rows.append(
            {
                "id": it.id,
                "subject": it.subject,
                "split": it.split,
                "recall_query": it.split in recall_splits,
                "evaluated": it.split in eval_splits,
                "max_cosine": c[0] if c else None,
                "max_cosine_sample": c[1] if c else None,
                "longest_shared_chars": n,
                "longest_shared_sample": sid,
                "dropped": drops.get(it.id, []),
            }
        )
    return {
        "ngram_n": ngram_n,
        "longest_shared_exact_from": seed_n,
        "note": f"Texts are compared NFKC-normalised, case-folded, letters and digits only. Shared substrings shorter than {seed_n} characters are reported as 0. max_cosine is null for items without a question vector (splits other than the recall splits).",
        "final_samples": len(final),
        "items": len(items),
        "items_with_drops": sum(1 for r in rows if r["dropped"]),
        "max_longest_shared_chars": max((r["longest_shared_chars"] for r in rows), default=0),
        "max_cosine": max((r["max_cosine"] for r in rows if r["max_cosine"] is not None), default=None),
        "benchmark": rows,
    }


def build_sft(
    *,
    recall_files: list[str | os.PathLike],
    recall_statistics: str | os.PathLike,
    benchmark_files: list[str | os.PathLike],
    benchmark_vectors: list[str | os.PathLike],
    pool_vectors: list[str | os.PathLike],
    pool_shards: list[str | os.PathLike],
    eval_driven_path: str | os.PathLike,
    random_path: str | os.PathLike,
    statistics_path: str | os.PathLike,
    contamination_path: str | os.PathLike,
    review_path: str | os.PathLike | None = None,
    fmt: str = "sharegpt",
    random_mix_ratio: float = 0.2,
    random_match: str = "samples",
    tokenizer: str | None = None,
    seed: int = 42,
    leak_guard: dict | None = None,
    longest_seed_n: int = 8,
    max_similarity: float | None = 0.95,
    recall_splits: list[str] = (),
    eval_splits: list[str] = (),
    progress: bool = True,
) -> dict:
    """Write both SFT arms (seeded shuffle), their statistics and the contamination report; returns the statistics.

    eval_driven = recalled samples + ``mix_size`` random medical pool samples not recalled; random =
    as many samples (or, with ``random_match="tokens"``, at least as many tokens) drawn uniformly from
    the whole pool. Every sample passes the same guard (n-gram, max_similarity) and exact-text dedup.
    Refuses an unknown format or match, an empty recall, and recall ids missing from the pool.
    """
    t0 = time.monotonic()
    if fmt not in FORMATS:
        raise ValueError(f"sft.format must be one of {FORMATS}, got {fmt!r}")
    if random_match not in MATCHES:
        raise ValueError(f"sft.random_match must be one of {MATCHES}, got {random_match!r}")
    mix_size(0, random_mix_ratio)  # refuses a bad ratio before any work
    items = leak.load_benchmark_items(benchmark_files)
    query_ids, _, queries = load_queries(benchmark_vectors, items)
    pool = PoolIndex(pool_vectors, pool_shards)
    settings = guard_settings(leak_guard)
    ngram_n = settings.ngram_n
    guard = Guard(items, settings, query_ids, queries, max_similarity, pool)
    recall_stats = read_json(recall_statistics)
    dropped: list[dict] = []
    for d in recall_stats.get("guard_drops", []):
        dropped.append({**d, "stage": "recall"})
    for d in recall_stats.get("max_similarity_drops", {}).get("recorded", []):
        dropped.append(
            {
                "sample_id": d["sample_id"],
                "stage": "recall",
                "benchmark_id": d["query_id"],
                "reason": "max_similarity",
                "score": d["similarity"],
            }
        )

    # Recalled samples, checked again: the benchmark or the guard settings may have changed since recall.
    positions, _, repeated = _read_recalled(recall_files, pool)
    records = pool.fetch(positions, progress=progress)
    failed = guard.check(positions, records)
    recalled = [p for p in positions if p not in failed]
    for p in failed:
        dropped.extend({"sample_id": records[p]["id"], "stage": "recalled_recheck", **d} for d in failed[p])
    if not recalled:
        raise ValueError(
            f"no recalled samples in {len(recall_files)} recall files: lower recall.similarity_threshold or check the pool"
        )
    name, count = token_counter(tokenizer)
    eval_set: list[tuple[int, dict, str]] = [(p, records[p], "recalled") for p in recalled]
    texts = {records[p]["text"].strip() for p in recalled}

    # The mix: medical pool samples that were not recalled.
    target_mix = mix_size(len(recalled), random_mix_ratio)
    recalled_set = set(positions)
    universe = np.flatnonzero(~pool.duplicate)
    mix_universe = universe[~np.isin(universe, np.fromiter(recalled_set, dtype=np.int64, count=len(recalled_set)))]
    mix: list[tuple[int, dict, str]] = []

    def mix_reject(p, rec):
        if not rec["medical"]:
            return "not_medical"
        if rec["text"].strip() in texts:
            return "duplicate_text"
        return None

    def mix_take(p, rec):
        mix.append((p, rec, "random_mix"))
        texts.add(rec["text"].strip())

    mix_info = _draw(
        "random_mix",
        mix_universe,
        np.random.default_rng([seed, _MIX]),
        pool,
        guard,
        mix_reject,
        lambda: len(mix) >= target_mix,
        lambda: target_mix - len(mix),
        mix_take,
        dropped,
        progress,
    )
    if len(mix) < target_mix:
        log.warning("random mix: only %d of %d medical, non-recalled, leak-free samples exist", len(mix), target_mix)
    eval_set += mix
    eval_tokens = sum(count(rec) for _, rec, _ in eval_set)

    # The random arm: uniform over the whole pool, same guard, same size (samples or tokens).
    rand: list[tuple[int, dict, str]] = []
    rand_texts: set[str] = set()
    rand_tokens = 0

    def rand_take(p, rec):
        nonlocal rand_tokens
        rand.append((p, rec, "random"))
        rand_texts.add(rec["text"].strip())
        rand_tokens += count(rec)

    if random_match == "samples":
        done, remaining = (lambda: len(rand) >= len(eval_set)), (lambda: len(eval_set) - len(rand))
    else:
        mean = max(1.0, eval_tokens / len(eval_set))
        done, remaining = (lambda: rand_tokens >= eval_tokens), (lambda: int((eval_tokens - rand_tokens) / mean) + 1)
    rand_info = _draw(
        "random",
        universe,
        np.random.default_rng([seed, _RANDOM]),
        pool,
        guard,
        lambda p, rec: "duplicate_text" if rec["text"].strip() in rand_texts else None,
        done,
        remaining,
        rand_take,
        dropped,
        progress,
    )
    if not done():
        raise ValueError(
            f"the pool has too few leak-free samples for a random arm matching {len(eval_set)} samples / {eval_tokens} {name}"
        )

    convert = to_sharegpt if fmt == "sharegpt" else to_alpaca
    arms = {}
    for arm, rows, stream, path in (
        ("eval_driven", eval_set, _SHUFFLE_EVAL, eval_driven_path),
        ("random", rand, _SHUFFLE_RANDOM, random_path),
    ):
        order = np.random.default_rng([seed, stream]).permutation(len(rows))
        write_jsonl(path, (convert(rows[i][1], rows[i][2]) for i in order))
        arms[arm] = {
            "samples": len(rows),
            "tokens": sum(count(r) for _, r, _ in rows),
            "medical": sum(1 for _, r, _ in rows if r["medical"]),
            "origins": dict(Counter(o for _, _, o in rows)),
        }

    final = {p: rec for p, rec, _ in eval_set + rand}
    report = contamination_report(
        items, final, pool, query_ids, queries, dropped, ngram_n, longest_seed_n, list(recall_splits), list(eval_splits)
    )
    write_json(contamination_path, report)
    if review_path is not None:
        write_review(review_path, dropped, benchmark_files, pool, seed)
    stats = {
        "format": fmt,
        "seed": seed,
        "random_mix_ratio": random_mix_ratio,
        "random_match": random_match,
        "token_count": name,
        "recalled": {
            "read": len(positions) + repeated,
            "repeated_ids": repeated,
            "dropped_by_guard": len(failed),
            "kept": len(recalled),
        },
        "random_mix": {"target": target_mix, "drawn": len(mix), "shortfall": target_mix - len(mix), **mix_info},
        "random": rand_info,
        "arms": arms,
        "actual_mix_ratio": round(len(mix) / len(eval_set), 6),
        "equal_sizes": arms["eval_driven"]["samples"] == arms["random"]["samples"],
        "contamination": {
            "items": report["items"],
            "items_with_drops": report["items_with_drops"],
            "drops_by_reason": dict(sorted(Counter(d["reason"] for d in dropped).items())),
            "max_longest_shared_chars": report["max_longest_shared_chars"],
            "max_cosine": report["max_cosine"],
        },
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, stats)
    log.info(
        "sft: eval_driven %d (%d recalled + %d random mix), random %d; %s %d vs %d",
        len(eval_set),
        len(recalled),
        len(mix),
        len(rand),
        name,
        arms["eval_driven"]["tokens"],
        arms["random"]["tokens"],
    )
    return stats
