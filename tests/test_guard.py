"""The contamination guard (evalsel.guard.check): each reason on hand-made cases, planted leaks of every
kind caught on the demo benchmark and on real C-Eval, and the false-drop rate on a real pool."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from leak_variants import KINDS, OPTIONS_ONLY, texts_of, variant

from evalsel.guard.check import ContentGuard, GuardSettings, guard_settings
from evalsel.guard.leak import BenchmarkItem, item_of, light_normalise, normalise

REPO = Path(__file__).resolve().parents[1]
# Every kind that keeps the question in some form; the options-only kinds (stem rewritten, options
# verbatim) go further and are caught when the options carry enough text (test_options_only_...).
LISTED = tuple(k for k in KINDS if k not in OPTIONS_ONLY)


def _item(rec: dict) -> BenchmarkItem:
    return item_of(rec)


def _segments(sample: dict) -> list[str]:
    return [t for t in (light_normalise(p) for p in texts_of(sample)) if t]


def _caught(guard: ContentGuard, items: list[BenchmarkItem], rec: dict, kind: str) -> list[str]:
    return [h.reason for h in guard.check(_segments(variant(rec, kind))) if items[h.item].id == rec["id"]]


ITEM = {
    "id": "physician/val/1",
    "question": "有机磷杀虫药中毒的特效解毒药是____",
    "choices": ["亚甲蓝", "纳洛酮", "二巯丙醇", "阿托品和碘解磷定"],
    "answer": "D",
}


@pytest.fixture(scope="module")
def one():
    items = [_item(ITEM)]
    return items, ContentGuard(items)


def test_each_reason_on_a_hand_made_item(one):
    items, g = one
    check = lambda text: [(h.reason, round(h.score, 2)) for h in g.check([normalise(text)])]  # noqa: E731
    assert check("有机磷杀虫药中毒的特效解毒药是阿托品") == [("exact_ngram", 1.0)]
    # two characters changed: no 13-gram left, most shingles and the alignment survive
    ((reason, score),) = check("有机磷杀虫剂中毒的特效解毒剂是哪个")
    assert reason in ("containment", "fuzzy")
    assert check("农药中毒用什么？亚甲蓝、纳洛酮、二巯丙醇还是阿托品和碘解磷定") == [("options", 1.0)]
    assert check("高血压患者平时要少吃盐，多运动，按时服药") == []
    assert check("阿托品可以用来散瞳") == []  # one option alone is not a copy


def test_the_known_leak_class_of_the_issue_is_caught(one):
    """~20-character question with two characters changed, its options as "A. ..." lines, the key in
    the response: every 13-gram broken, each option under 13 characters."""
    items, g = one
    leak = variant(ITEM, "substituted")
    assert all(len(o) < 13 for o in ITEM["choices"])
    segs = _segments(leak)
    # the 13-gram check, the old guard's only text check, misses it
    assert "exact_ngram" not in [h.reason for h in g.check(segs)]
    assert [h.reason for h in g.check(segs)] and "正确答案是" in leak["output"]


def test_settings_come_from_the_config_section():
    s = guard_settings({"ngram_n": 11, "fuzzy": 90, "longest_seed_n": 8})
    assert (s.ngram_n, s.fuzzy, s.containment) == (11, 90, GuardSettings().containment)
    with pytest.raises(ValueError, match="containment"):
        guard_settings({"containment": 1.5})


def _demo_items() -> list[dict]:
    out = []
    for path in sorted((REPO / "demo" / "data" / "benchmark").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            choices = [r[c] for c in "ABCDE" if r.get(c)]
            out.append(
                {
                    "id": f"{path.stem}/{path.parent.name}/{r['id']}",
                    "question": r["question"],
                    "choices": choices,
                    "answer": r["answer"],
                }
            )
    return out


def _ceval_items(shared: Path) -> list[dict]:
    out = []
    for path in sorted((shared / "ceval_medical").glob("*/*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            out.append(
                {
                    "id": f"{path.stem}/{path.parent.name}/{r['id']}",
                    "question": r["question"],
                    "choices": [r[c] for c in "ABCD"],
                    "answer": r["answer"],
                }
            )
    return out


def _acceptance(recs: list[dict]) -> Counter:
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    missed: Counter = Counter()
    for rec in recs:
        for kind in LISTED:
            if not _caught(g, items, rec, kind):
                missed[kind] += 1
    return missed


def test_planted_leaks_of_the_demo_benchmark_are_all_caught():
    recs = _demo_items()
    assert len(recs) == 96  # dev, val and the recall split test
    assert _acceptance(recs) == Counter()


# The one known miss: an item whose options are single characters (砷, 氟, 钙, 磷), listed in running
# prose after a 10-character question ("...是砷、氟、钙还是磷"): one-character options count only as
# whole tokens, or a common character in any text would count as an option.
KNOWN_MISSES = {"options_in_prose": 1}


def test_planted_leaks_of_real_ceval_are_all_caught(shared_data):
    recs = _ceval_items(shared_data)
    assert len(recs) == 908
    missed = _acceptance(recs)
    recall = {k: f"{len(recs) - missed[k]}/{len(recs)}" for k in LISTED}
    print(f"\nreal C-Eval: {len(recs)} items x {len(LISTED)} leak kinds planted, caught per kind: {recall}")
    assert missed == Counter(KNOWN_MISSES)


def test_options_only_leaks_with_real_options(shared_data):
    """Stem rewritten, options verbatim after answer letters (also in Traditional characters):
    caught whenever the options carry text, three or more of them with content letters, 8+ letters
    together. Options of numbers, units or formula symbols alone (30/40/50/60, B1/B2/C1/C2) are
    no evidence without the question: real pools list such values all the time."""
    from evalsel.guard.check import content_letters

    recs = _ceval_items(shared_data)
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    strong = [[o for o in map(normalise, r["choices"]) if len(o) >= 2 and content_letters(o) >= 2] for r in recs]
    texty = [r for r, st in zip(recs, strong) if len(st) == len(r["choices"]) >= 3 and sum(map(len, st)) >= 8]
    for kind in OPTIONS_ONLY:
        missed = [r["id"] for r in texty if not _caught(g, items, r, kind)]
        print(f"\n{kind}: {len(texty) - len(missed)}/{len(texty)} items with text options caught")
        assert len(texty) > 800 and missed == []


def _pool_segments(rec: dict) -> list[str]:
    if "conversations" in rec:
        parts = [t.get("value", "") for t in rec["conversations"]]
    elif "instruction" in rec:
        parts = [rec.get("instruction", ""), rec.get("input", ""), rec.get("output", "")]
    else:
        parts = [rec.get("question", ""), rec.get("answer", "")]
    return [s for s in (light_normalise(p) for p in parts if isinstance(p, str)) if s]


def _real_pool(shared: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((shared / "pool").glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


# Every drop on the real pool, read by hand (guard v3): none is a copy of a C-Eval item; each is one
# of two kinds the text checks cannot tell from a leak without meaning:
# - a near-verbatim stem about the same or another entity ("...癌最常见的转移部位为", "艾滋病的主要
#   传播途径为", "引起肠梗阻的原因是"): 3 containment drops;
# - a textbook sentence an option copies ("月经周期一般为28~30天，提前或..."), or the options of an
#   item listed as the usual differential with part of its question (the four white-cell types of a
#   blood count): 1 exact_ngram and 2 options drops.
MAX_FALSE_DROPS = 12


def test_false_drop_rate_on_the_real_pool(shared_data):
    """Real pool samples, none derived from the benchmark: every drop is a false drop; at most
    MAX_FALSE_DROPS of 70k (the guard v2 dropped 149: numeric options, vital signs, short stems)."""
    recs = _ceval_items(shared_data)
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    pool = _real_pool(shared_data)
    texts = [_pool_segments(rec) for rec in pool]
    reasons: Counter = Counter()
    for lo in range(0, len(texts), 1024):
        for hits in g.check_many(texts[lo : lo + 1024]):
            if hits:
                reasons[hits[0].reason] += 1
    dropped = sum(reasons.values())
    print(
        f"\nfalse drops: {dropped} of {len(pool)} real pool samples ({100 * dropped / len(pool):.3f}%): {dict(reasons)}"
    )
    assert len(pool) > 60000 and dropped <= MAX_FALSE_DROPS


def _hard_negatives(recs: list[dict], pool: list[dict]) -> dict[str, list[tuple[int, list[str]]]]:
    """Real pool samples that share with a benchmark item what a substring guard mistakes for a
    copy, without stating the item: (item index, sample texts) per class.

    - ``numbers``: every option of an item of numbers, units or symbols (30/40/50/60, B1/B2/C1/C2)
      occurs in the sample as a substring;
    - ``vitals``: the sample shares a 13-character run of the item's letters and digits that holds
      fewer than 6 content letters (vital signs, lab values, doses);
    - ``short_stem``: the sample contains an item's short question (4-12 characters) whole, and no
      option of it within 100 characters;
    - ``two_options``: two of an item's options occur in the sample, and no part of its question.
    """
    from evalsel.guard.check import content_letters
    from evalsel.guard.leak import char_ngrams

    strict = [[normalise(t) for t in [r["question"], *r["choices"]]] for r in recs]
    numeric = [(i, segs[1:]) for i, segs in enumerate(strict) if all(o and content_letters(o) < 2 for o in segs[1:])]
    weak_grams: dict[str, int] = {}
    for i, segs in enumerate(strict):
        for gram in char_ngrams(segs, 13):
            if content_letters(gram) < 6:
                weak_grams.setdefault(gram, i)
    short = [(i, segs[0]) for i, segs in enumerate(strict) if 4 <= len(segs[0]) < 13]
    out: dict[str, list] = {"numbers": [], "vitals": [], "short_stem": [], "two_options": []}
    rng = random.Random(0)
    for rec in pool:
        texts = _pool_segments(rec)
        joined = "|".join(t.replace(" ", "") for t in texts)
        for i, opts in numeric:
            if all(o in joined for o in opts):
                out["numbers"].append((i, texts))
        shared = char_ngrams(joined.split("|"), 13) & weak_grams.keys()
        if shared:
            out["vitals"].append((weak_grams[min(shared)], texts))
        for i, q in short:
            at = joined.find(q)
            if at >= 0 and not any(o in joined[max(0, at - 100) : at + len(q) + 100] for o in strict[i][1:] if o):
                out["short_stem"].append((i, texts))
        if rng.random() < 0.05:  # a sample of the pool for the costly class
            qsh = [char_ngrams([segs[0]], 3) for segs in strict]
            sh = char_ngrams(joined.split("|"), 3)
            for i, segs in enumerate(strict):
                found = [o for o in segs[1:] if len(o) >= 2 and o in joined]
                if len(found) == 2 and not qsh[i] & sh:
                    out["two_options"].append((i, texts))
    return out


def test_hard_negatives_of_the_real_pool_are_kept(shared_data):
    """Numbers, vital signs, a short stem, two options: each shared with an item, none a copy of it."""
    recs = _ceval_items(shared_data)
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    classes = _hard_negatives(recs, _real_pool(shared_data))
    report = {}
    for name, cases in classes.items():
        wrong = [
            i for (i, texts), hits in zip(cases, g.check_many([t for _, t in cases])) if any(h.item == i for h in hits)
        ]
        report[name] = f"{len(cases) - len(wrong)}/{len(cases)} kept"
        assert cases, name
        assert not wrong, (name, [recs[i]["question"] for i in wrong])
    print(f"\nhard negatives of the real pool: {report}")


def test_planted_leaks_never_reach_either_sft_set(shared_data, tmp_path):
    """Real C-Eval as the benchmark, a real pool with every kind of leak of 30 items planted in it
    (recall queries and test items alike): recall and sft_build run, and no leak is in either arm."""
    from real_pool import selection_paths, write_real_benchmark, write_real_pool
    from test_sft import _files

    from evalsel.core.io import read_json, text_hash
    from evalsel.select.recall import run_recall
    from evalsel.sets.build import build_sft

    subjects = ["basic_medicine", "clinical_medicine", "physician"]
    recs = _ceval_items(shared_data)
    write_real_benchmark(shared_data, tmp_path, subjects)
    rng = random.Random(1)
    targets = rng.sample([r for r in recs if "/val/" in r["id"]], 15) + rng.sample(
        [r for r in recs if "/test/" in r["id"]], 15
    )

    def turns(v: dict) -> list[str]:
        return [t for t in texts_of(v) if t]

    planted = {}
    for r in targets:
        for kind in KINDS:
            ts = turns(variant(r, kind))
            conv = [{"from": "gpt" if k % 2 else "human", "value": t} for k, t in enumerate(ts)]
            planted[text_hash(json.dumps(conv, ensure_ascii=False))] = (r["id"], kind)
    leaks = [turns(variant(r, kind)) for r in targets for kind in KINDS]
    pool_vectors, pool_shards = write_real_pool(shared_data, tmp_path, 800, extra={"medical_qa_alpaca": leaks})
    bfiles, qfiles, rfiles = selection_paths(tmp_path, subjects)
    # max_similarity 1.0: only the text checks stand between a leak and the SFT sets
    rstats = run_recall(
        subjects=subjects,
        query_vectors=qfiles,
        benchmark_files=bfiles,
        pool_vectors=pool_vectors,
        pool_shards=pool_shards,
        recall_outputs=rfiles,
        statistics_path=tmp_path / "results/recall/recall_statistics.json",
        histogram_path=tmp_path / "results/recall/similarity_hist.png",
        top_k=40,
        similarity_threshold=0.2,
        max_similarity=1.0,
        backend="numpy",
        progress=False,
    )
    stats = build_sft(
        recall_files=rfiles,
        recall_statistics=tmp_path / "results/recall/recall_statistics.json",
        benchmark_files=bfiles,
        benchmark_vectors=qfiles,
        pool_vectors=pool_vectors,
        pool_shards=pool_shards,
        eval_driven_path=tmp_path / "results/sft/eval_driven.jsonl",
        random_path=tmp_path / "results/sft/random.jsonl",
        statistics_path=tmp_path / "results/sft/sft_statistics.json",
        contamination_path=tmp_path / "results/sft/contamination.json",
        review_path=tmp_path / "results/sft/contamination_review.md",
        max_similarity=1.0,
        random_mix_ratio=0.5,
        recall_splits=["val"],
        eval_splits=["val"],
        progress=False,
    )
    ev, rnd = _files(tmp_path)
    final = {r["id"] for r in ev + rnd}
    assert not final & set(planted), [planted[i] for i in final & set(planted)]
    # the leaks recall met were dropped by the text checks, each named with its item
    recalled_drops = {d["sample_id"]: d for d in rstats["guard_drops"]}
    assert len(set(planted) & set(recalled_drops)) >= 100
    for pid in set(planted) & set(recalled_drops):
        assert recalled_drops[pid]["reason"] in ("exact_ngram", "containment", "fuzzy", "short_question", "options")
    report = read_json(tmp_path / "results/sft/contamination.json")
    by_item = {row["id"]: {d["sample_id"] for d in row["dropped"]} for row in report["benchmark"]}
    for pid in set(planted) & set(recalled_drops):
        assert pid in by_item[recalled_drops[pid]["benchmark_id"]]
    review = (tmp_path / "results/sft/contamination_review.md").read_text(encoding="utf-8")
    assert review.count("\n## ") == 20
    # the evidence of each drop is shown beside it, in bold where it stands verbatim
    assert review.count("- evidence (normalised): ") >= 5 and review.count("**") >= 10
    assert stats["contamination"]["drops_by_reason"]


def test_transfer_guard_lists_items_a_training_sample_matches(tmp_path):
    """A transfer benchmark played no part in selection: the finished SFT sets are scanned against
    it, and the evaluation leaves every matched item out for every model."""
    from evalsel.core.io import write_jsonl
    from evalsel.evaluate.multiple_choice import load_questions
    from evalsel.guard.transfer import run_transfer_guard

    bench = tmp_path / "nursing.jsonl"
    rows = [
        {
            "id": f"t/nursing/val/{i}",
            "subject": "nursing",
            "split": "val",
            "question": q,
            "choices": c,
            "answer": "A",
            "explanation": "",
        }
        for i, (q, c) in enumerate(
            [
                ("为防止长期卧床患者发生压疮应每隔多久翻身一次", ["2小时", "6小时"]),
                ("成人静脉输液时一般溶液的滴速约为每分钟多少滴", ["40~60滴", "100滴"]),
            ]
        )
    ]
    write_jsonl(bench, rows)
    leak = variant(
        {"id": rows[1]["id"], "question": rows[1]["question"], "choices": rows[1]["choices"], "answer": "A"},
        "substituted",
    )
    write_jsonl(
        tmp_path / "eval_driven.jsonl",
        [
            {
                "id": "s1",
                "conversations": [{"from": "human", "value": "头痛怎么办？"}, {"from": "gpt", "value": "注意休息。"}],
            },
            {
                "id": "s2",
                "instruction": leak["instruction"],
                "input": "",
                "output": leak["output"],
                "history": [["你好", "您好，请讲。"]],
            },
        ],
    )
    write_jsonl(
        tmp_path / "random.jsonl",
        [
            {
                "id": "s3",
                "conversations": [{"from": "human", "value": "感冒吃什么？"}, {"from": "gpt", "value": "多喝水。"}],
            }
        ],
    )
    out = tmp_path / "contamination.json"
    rep = run_transfer_guard([tmp_path / "eval_driven.jsonl", tmp_path / "random.jsonl"], [bench], out)
    assert rep["items"] == 2 and rep["checked"] == 3 and rep["contaminated_items"] == 1
    (drop,) = rep["contaminated"][rows[1]["id"]]
    assert drop["arm"] == "eval_driven" and drop["sample_id"] == "s2" and drop["reason"] != "max_similarity"
    assert json.loads(out.read_text())["contaminated_items"] == 1
    questions, _ = load_questions([bench], ["val"])
    assert (
        len(questions) == 2
    )  # every item is scored: the report leaves matched ones out (build_comparison(exclude_ids=...))


def _reference(g: ContentGuard, texts: list[str]) -> tuple[set[int], set[int]]:
    """The candidate lookup and the exact n-grams in plain Python sets and Counters (what the
    vectorised lookup replaced): the items a sample is scored against, and those it shares a
    counted n-gram with."""
    from evalsel.guard.check import OPTION_CANDIDATE_SHARE
    from evalsel.guard.leak import char_ngrams

    s = g.settings
    segs = [t.replace(" ", "") for t in texts]

    def grams_of(text: str) -> set[str]:
        return char_ngrams([text], s.shingle_n) if len(text) >= s.shingle_n else ({text} if text else set())

    sample = set().union(*(char_ngrams(segs, n) for n in (1, 2, 3)))
    cands = set()
    for per_item, share in (
        ([grams_of(q) for q in g.questions], s.candidate_share),
        (
            [set().union(*(grams_of(o.letters) for o in opts if not o.tiny)) for opts in g.options],
            OPTION_CANDIDATE_SHARE,
        ),
    ):
        df = Counter(x for grams in per_item for x in grams)
        for i, grams in enumerate(per_item):
            rare = {x for x in grams if df[x] <= s.common_df}
            if rare and len(rare & sample) >= max(1, share * len(rare)):
                cands.add(i)
    exact = {i for gram in char_ngrams(segs, s.ngram_n) for i in g.grams.get(gram, ())}
    return cands, exact


def test_the_vectorised_lookup_is_the_plain_one():
    """Packed integer shingles, bitmap, binary search and the rolling-hash n-grams give exactly the
    sets the plain-Python lookup gives, on planted leaks and on ordinary demo pool text."""
    import numpy as np

    from evalsel.guard.check import _SEP, _codes

    recs = _demo_items()
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    samples = [_segments(variant(r, k)) for r in recs[:30] for k in KINDS]
    for path in sorted((REPO / "demo" / "data").glob("pool_*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            rec = json.loads(line)
            samples.append(_pool_segments(rec))
    samples = [t for t in samples if t]
    assert len(samples) > 500
    parsed_cands = []
    for lo in range(0, len(samples), 128):
        batch = samples[lo : lo + 128]
        texts = ["|".join(t.replace(" ", "") for t in ts).replace("|", _SEP) for ts in batch]
        big = "".join(t + _SEP for t in texts)
        cp = _codes(big)
        owner = np.repeat(np.arange(len(batch)), [len(t) + 1 for t in texts])
        cands = g._candidates(cp, owner, len(batch))
        exact = g._exact(big, cp, owner, len(batch))
        for ts, c, e in zip(batch, cands, exact):
            ref_c, ref_e = _reference(g, ts)
            assert c == ref_c and set(e) == ref_e, ts
            parsed_cands.append(len(c))
    assert sum(parsed_cands) > 100  # candidates were found, not only empty sets compared
