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

from evalsel.core.io import InputError, read_json, read_jsonl, write_json, write_jsonl
from evalsel.core.settings import default
from evalsel.core.vectors import load_queries
from evalsel.data.poolindex import PoolIndex
from evalsel.guard import leak
from evalsel.guard.check import ContentGuard, GuardSettings, guard_settings, rows_above

log = logging.getLogger(__name__)

FORMATS = ("sharegpt", "alpaca")
MATCHES = ("samples", "tokens")
# Independent random streams derived from the one configured seed.
_MIX, _RANDOM, _SHUFFLE_EVAL, _SHUFFLE_RANDOM = 1, 2, 3, 4
# The arms of :func:`build_sft`, the two-arm composition.
ARMS2 = ("eval_driven", "random")


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
    """The contamination guard (evalsel.guard.check.ContentGuard: exact n-grams, containment, fuzzy and
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
        out = {p: [h.record(self.items) for h in hits] for p, hits in self.content.hits_of(positions, records).items()}
        rest = [p for p in positions if p not in out]
        if self.max_similarity is not None and len(self.queries) and rest:
            for lo in range(0, len(rest), 4096):  # gathered a batch at a time: bounded memory
                chunk = rest[lo : lo + 4096]
                for j, qs, sims in rows_above(self.pool.gather(chunk), self.queries, self.max_similarity):
                    out[chunk[j]] = [
                        {"benchmark_id": self.query_ids[q], "reason": "max_similarity", "score": round(float(v), 6)}
                        for q, v in zip(qs, sims)
                    ]
        return out


def _excerpt(text: str, evidence: list[str], width: int = 400) -> str:
    """``width`` characters of ``text`` around the first piece of evidence found in it verbatim,
    every verbatim piece in bold (normalised evidence that is not verbatim is listed apart)."""
    at = min((text.find(e) for e in evidence if e and e in text), default=0)
    lo = max(0, at - width // 3)
    part = text[lo : lo + width]
    shown = {e for e in evidence if e and e in part}
    for e in sorted({e for e in shown if not any(e != o and e in o for o in shown)}, key=len, reverse=True):
        part = part.replace(e, f"**{e}**")
    return f"{'...' if lo else ''}{part}{'...' if lo + width < len(text) else ''}"


def write_review(
    path: str | os.PathLike, dropped: list[dict], benchmark_files, pool: PoolIndex, seed: int, n: int = 20
) -> None:
    """``n`` random guard drops (seeded), each with the benchmark item it matched and the sample's
    text, as Markdown for a person to judge (false drops show here first)."""
    from evalsel.core.io import atomic_write
    from evalsel.core.records import read_records

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
        "fuzzy, short_question, options), drawn at random. Each: the benchmark item it matched, the reason and score, and the "
        "sample. A drop that is not a copy of the item is a false drop: tell the maintainers which.",
        "",
    ]
    for k, d in enumerate(picked, 1):
        item = records.get(d["benchmark_id"], {})
        sample = samples.get(d["sample_id"], {})
        turns = " / ".join(t["value"] for t in sample.get("conversations", []))
        options = "; ".join(f"{'ABCDE'[i]}. {c}" for i, c in enumerate(item.get("choices", [])))
        evidence = [e for e in (d.get("detail") or "").split(",") if e]
        lines += [
            f"## {k}. {d['reason']} (score {d.get('score')}), stage {d.get('stage')}",
            "",
            f"- item `{d['benchmark_id']}`: {item.get('question', '?')}  \n  options: {options}",
            *([f"- evidence (normalised): {', '.join(evidence)}"] if evidence else []),
            f"- sample `{d['sample_id']}`: {_excerpt(turns, evidence)}",
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


class Context:
    """What every SFT job shares: the benchmark items, the question vectors (cosine space), the
    pool (with its vectors when a cosine arm embedded it, else from the shards alone) and the guard.

    Without vectors the guard is the text checks alone; with them it adds max_similarity. Either
    way every arm of a run passes the same guard."""

    def __init__(
        self,
        benchmark_files: list[str | os.PathLike],
        benchmark_vectors: list[str | os.PathLike],
        pool_vectors: list[str | os.PathLike],
        pool_shards: list[str | os.PathLike],
        leak_guard: dict | None = None,
        max_similarity: float | None = 0.95,
    ):
        self.benchmark_files = list(benchmark_files)
        self.items = leak.load_benchmark_items(benchmark_files)
        if pool_vectors:
            self.query_ids, _, self.queries = load_queries(benchmark_vectors, self.items)
            self.pool = PoolIndex(pool_vectors, pool_shards)
        else:
            self.query_ids, self.queries = [], np.zeros((0, 0), np.float32)
            self.pool = PoolIndex.from_shards(pool_shards)
            max_similarity = None
        self.settings = guard_settings(leak_guard)
        self.guard = Guard(self.items, self.settings, self.query_ids, self.queries, max_similarity, self.pool)

    @classmethod
    def of_job(cls, inputs, params) -> Context:
        """The context of an SFT rule's job: its ``benchmark``, ``queries``, ``pool_vectors`` and
        ``pool_shards`` inputs, its ``leak_guard`` and ``max_similarity`` params."""
        return cls(
            list(inputs.benchmark),
            list(inputs.queries),
            list(inputs.pool_vectors),
            list(inputs.pool_shards),
            dict(params.leak_guard),
            params.max_similarity,
        )


def _selection_drops(selection_statistics) -> list[dict]:
    """The drops the selection job recorded (guard and max_similarity), as stage "recall"."""
    st = read_json(selection_statistics)
    out = [{**d, "stage": "recall"} for d in st.get("guard_drops", [])]
    for d in st.get("max_similarity_drops", {}).get("recorded", []):
        out.append(
            {
                "sample_id": d["sample_id"],
                "stage": "recall",
                "benchmark_id": d["query_id"],
                "reason": "max_similarity",
                "score": d["similarity"],
            }
        )
    return out


def _write_arm(path, rows, fmt: str, seed: int, stream: int, count) -> dict:
    convert = to_sharegpt if fmt == "sharegpt" else to_alpaca
    order = np.random.default_rng([seed, stream]).permutation(len(rows))
    write_jsonl(path, (convert(rows[i][1], rows[i][2]) for i in order))
    return {
        "samples": len(rows),
        "tokens": sum(count(r) for _, r, _ in rows),
        "medical": sum(1 for _, r, _ in rows if r["medical"]),
        "origins": dict(Counter(o for _, _, o in rows)),
    }


def _check_format(fmt: str, random_match: str = "samples") -> None:
    if fmt not in FORMATS:
        raise ValueError(f"sft.format must be one of {FORMATS}, got {fmt!r}")
    if random_match not in MATCHES:
        raise ValueError(f"sft.random_match must be one of {MATCHES}, got {random_match!r}")


def build_arm(
    ctx: Context,
    *,
    name: str,
    selection_files: list[str | os.PathLike],
    selection_statistics: str | os.PathLike,
    out_path: str | os.PathLike,
    statistics_path: str | os.PathLike,
    drops_path: str | os.PathLike,
    fmt: str = "sharegpt",
    random_mix_ratio: float = default("sft.random_mix_ratio"),
    tokenizer: str | None = None,
    seed: int = default("seed"),
    progress: bool = True,
) -> dict:
    """One selection arm's SFT set: its selected samples, checked again by the guard (the benchmark
    or the guard settings may have changed since selection), plus ``mix_size`` random medical pool
    samples it did not select. Writes the set (seeded shuffle), its statistics and its drops."""
    t0 = time.monotonic()
    _check_format(fmt)
    mix_size(0, random_mix_ratio)  # refuses a bad ratio before any work
    pool, guard = ctx.pool, ctx.guard
    dropped = [{**d, "arm": name} for d in _selection_drops(selection_statistics)]
    positions, _, repeated = _read_recalled(selection_files, pool)
    records = pool.fetch(positions, progress=progress)
    failed = guard.check(positions, records)
    recalled = [p for p in positions if p not in failed]
    for p in failed:
        dropped.extend(
            {"sample_id": records[p]["id"], "stage": "recalled_recheck", "arm": name, **d} for d in failed[p]
        )
    if not recalled:
        raise ValueError(
            f"arm {name}: no selected samples in {len(selection_files)} selection files: "
            "lower the similarity threshold or check the pool"
        )
    token_name, count = token_counter(tokenizer)
    rows: list[tuple[int, dict, str]] = [(p, records[p], "recalled") for p in recalled]
    texts = {records[p]["text"].strip() for p in recalled}

    target = mix_size(len(recalled), random_mix_ratio)
    chosen = np.asarray(positions, dtype=np.int64)  # already unique (_read_recalled drops repeats)
    universe = np.flatnonzero(~pool.duplicate)
    mix: list[tuple[int, dict, str]] = []

    def reject(p, rec):
        if not rec["medical"]:
            return "not_medical"
        if rec["text"].strip() in texts:
            return "duplicate_text"
        return None

    def take(p, rec):
        mix.append((p, rec, "random_mix"))
        texts.add(rec["text"].strip())

    stage_drops: list[dict] = []
    mix_info = _draw(
        "random_mix",
        universe[~np.isin(universe, chosen)],
        np.random.default_rng([seed, _MIX]),
        pool,
        guard,
        reject,
        lambda: len(mix) >= target,
        lambda: target - len(mix),
        take,
        stage_drops,
        progress,
    )
    dropped += [{**d, "arm": name} for d in stage_drops]
    if len(mix) < target:
        log.warning("%s: random mix: only %d of %d medical, unselected, leak-free samples", name, len(mix), target)
    rows += mix
    summary = _write_arm(out_path, rows, fmt, seed, _SHUFFLE_EVAL, count)
    stats = {
        "arm": name,
        "kind": "selection",
        "format": fmt,
        "seed": seed,
        "token_count": token_name,
        "random_mix_ratio": random_mix_ratio,
        "recalled": {
            "read": len(positions) + repeated,
            "repeated_ids": repeated,
            "dropped_by_guard": len(failed),
            "kept": len(recalled),
        },
        "random_mix": {"target": target, "drawn": len(mix), "shortfall": target - len(mix), **mix_info},
        "actual_mix_ratio": round(len(mix) / len(rows), 6),
        **summary,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, stats)
    write_json(drops_path, dropped)
    log.info("sft %s: %d samples (%d selected + %d random mix)", name, len(rows), len(recalled), len(mix))
    return stats


def build_random(
    ctx: Context,
    *,
    name: str,
    match_statistics: str | os.PathLike,
    out_path: str | os.PathLike,
    statistics_path: str | os.PathLike,
    drops_path: str | os.PathLike,
    fmt: str = "sharegpt",
    random_match: str = default("sft.random_match"),
    tokenizer: str | None = None,
    seed: int = default("seed"),
    progress: bool = True,
) -> dict:
    """A random arm: uniform over the whole pool, the same guard, as many samples (or, with
    ``random_match="tokens"``, at least as many tokens) as the arm whose statistics it matches."""
    t0 = time.monotonic()
    _check_format(fmt, random_match)
    match = read_json(match_statistics)
    token_name, count = token_counter(tokenizer)
    if match.get("token_count") != token_name:
        raise ValueError(
            f"{match_statistics} counted {match.get('token_count')!r}, this arm counts {token_name!r}: rerun both"
        )
    n_match, tok_match = int(match["samples"]), int(match["tokens"])
    rand: list[tuple[int, dict, str]] = []
    rand_texts: set[str] = set()
    tokens = 0

    def take(p, rec):
        nonlocal tokens
        rand.append((p, rec, "random"))
        rand_texts.add(rec["text"].strip())
        tokens += count(rec)

    if random_match == "samples":
        done, remaining = (lambda: len(rand) >= n_match), (lambda: n_match - len(rand))
    else:
        mean = max(1.0, tok_match / max(1, n_match))
        done, remaining = (lambda: tokens >= tok_match), (lambda: int((tok_match - tokens) / mean) + 1)
    dropped: list[dict] = []
    info = _draw(
        "random",
        np.flatnonzero(~ctx.pool.duplicate),
        np.random.default_rng([seed, _RANDOM]),
        ctx.pool,
        ctx.guard,
        lambda p, rec: "duplicate_text" if rec["text"].strip() in rand_texts else None,
        done,
        remaining,
        take,
        dropped,
        progress,
    )
    if not done():
        raise ValueError(
            f"arm {name}: the pool has too few leak-free samples to match {n_match} samples / {tok_match} {token_name}"
        )
    summary = _write_arm(out_path, rand, fmt, seed, _SHUFFLE_RANDOM, count)
    stats = {
        "arm": name,
        "kind": "random",
        "matches": match.get("arm"),
        "random_match": random_match,
        "format": fmt,
        "seed": seed,
        "token_count": token_name,
        "random": info,
        **summary,
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_json(statistics_path, stats)
    write_json(drops_path, [{**d, "arm": name} for d in dropped])
    log.info("sft %s: %d random samples matching %s", name, len(rand), match.get("arm"))
    return stats


def summarize(
    ctx: Context,
    *,
    arms: dict[str, tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike]],
    statistics_path: str | os.PathLike,
    contamination_path: str | os.PathLike,
    review_path: str | os.PathLike | None = None,
    longest_seed_n: int = default("leak_guard.longest_seed_n"),
    recall_splits: list[str] = (),
    eval_splits: list[str] = (),
    seed: int = default("seed"),
    progress: bool = True,
) -> dict:
    """The contamination report over every arm's final set (``arms``: name -> (SFT file, its
    statistics, its drops)), the review file and the summary statistics of all arms."""
    per_arm, dropped, positions = {}, [], set()
    for name, (sft_path, stats_path, drops_path) in arms.items():
        per_arm[name] = read_json(stats_path)
        dropped += read_json(drops_path)
        for lineno, rec in read_jsonl(sft_path):
            pos = ctx.pool.position.get(rec.get("id")) if isinstance(rec, dict) else None
            if pos is None:
                raise InputError(sft_path, lineno, "id", "not a pool sample id: the SFT set is stale")
            positions.add(pos)
    final = ctx.pool.fetch(sorted(positions), progress=progress)
    report = contamination_report(
        ctx.items,
        final,
        ctx.pool,
        ctx.query_ids,
        ctx.queries,
        dropped,
        ctx.settings.ngram_n,
        longest_seed_n,
        list(recall_splits),
        list(eval_splits),
    )
    write_json(contamination_path, report)
    if review_path is not None:
        write_review(review_path, dropped, ctx.benchmark_files, ctx.pool, seed)
    sizes = {a: st["samples"] for a, st in per_arm.items()}
    stats = {
        "seed": seed,
        "token_count": next(iter(per_arm.values()))["token_count"] if per_arm else None,
        "arms": {
            a: {k: st[k] for k in ("kind", "samples", "tokens", "medical", "origins")} for a, st in per_arm.items()
        },
        "equal_sizes": len(set(sizes.values())) <= 1,
        "details": per_arm,
        "contamination": {
            "items": report["items"],
            "items_with_drops": report["items_with_drops"],
            "drops_by_reason": dict(sorted(Counter(d["reason"] for d in dropped).items())),
            "max_longest_shared_chars": report["max_longest_shared_chars"],
            "max_cosine": report["max_cosine"],
        },
    }
    write_json(statistics_path, stats)
    return stats


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
    random_mix_ratio: float = default("sft.random_mix_ratio"),
    random_match: str = default("sft.random_match"),
    tokenizer: str | None = None,
    seed: int = default("seed"),
    leak_guard: dict | None = None,
    longest_seed_n: int = default("leak_guard.longest_seed_n"),
    max_similarity: float | None = default("recall.max_similarity"),
    recall_splits: list[str] = (),
    eval_splits: list[str] = (),
    progress: bool = True,
) -> dict:
    """The two-arm case in one call (eval_driven from one recall, random matching it): the three
    phases the DAG runs as separate jobs (:func:`build_arm`, :func:`build_random`,
    :func:`summarize`), with the per-arm files beside ``statistics_path``. Returns the summary
    statistics with the eval-driven arm's selection details (``recalled``, ``random_mix``,
    ``actual_mix_ratio``) and the random draw (``random``) at the top level."""
    _check_format(fmt, random_match)
    mix_size(0, random_mix_ratio)
    ctx = Context(benchmark_files, benchmark_vectors, pool_vectors, pool_shards, leak_guard, max_similarity)
    side = os.path.dirname(os.fspath(statistics_path))
    files = {a: (os.path.join(side, f"{a}.stats.json"), os.path.join(side, f"{a}.drops.json")) for a in ARMS2}
    common = dict(fmt=fmt, tokenizer=tokenizer, seed=seed, progress=progress)
    ev = build_arm(
        ctx,
        name="eval_driven",
        selection_files=recall_files,
        selection_statistics=recall_statistics,
        out_path=eval_driven_path,
        statistics_path=files["eval_driven"][0],
        drops_path=files["eval_driven"][1],
        random_mix_ratio=random_mix_ratio,
        **common,
    )
    rnd = build_random(
        ctx,
        name="random",
        match_statistics=files["eval_driven"][0],
        out_path=random_path,
        statistics_path=files["random"][0],
        drops_path=files["random"][1],
        random_match=random_match,
        **common,
    )
    stats = summarize(
        ctx,
        arms={"eval_driven": (eval_driven_path, *files["eval_driven"]), "random": (random_path, *files["random"])},
        statistics_path=statistics_path,
        contamination_path=contamination_path,
        review_path=review_path,
        longest_seed_n=longest_seed_n,
        recall_splits=recall_splits,
        eval_splits=eval_splits,
        seed=seed,
        progress=progress,
    )
    return {
        **stats,
        "format": fmt,
        "random_match": random_match,
        "recalled": ev["recalled"],
        "random_mix": ev["random_mix"],
        "actual_mix_ratio": ev["actual_mix_ratio"],
        "random": rnd["random"],
    }
