"""The contamination guard (evalsel.guard): each reason on hand-made cases, planted leaks of every
kind caught on the demo benchmark and on real C-Eval, and the false-drop rate on a real pool."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest
from leak_variants import KINDS, variant

from evalsel.guard import ContentGuard, GuardSettings, guard_settings
from evalsel.leak import BenchmarkItem, normalise

REPO = Path(__file__).resolve().parents[1]
# Kinds the issue lists; "options_only_reworded" (stem rewritten, options verbatim) goes further
# and is caught when the options carry enough text (see test_options_only_leaks_with_real_options).
LISTED = tuple(k for k in KINDS if k != "options_only_reworded")


def _item(rec: dict) -> BenchmarkItem:
    return BenchmarkItem(
        rec["id"],
        rec.get("subject", ""),
        rec.get("split", ""),
        [s for s in (normalise(t) for t in [rec["question"], *rec["choices"]]) if s],
    )


def _segments(sample: dict) -> list[str]:
    parts = [sample.get("instruction", ""), sample.get("input", ""), sample.get("output", "")]
    return [s for s in (normalise(p) for p in parts) if s]


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
    assert not g.ngrams.matches(segs)  # the old guard's only text check misses it
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
    assert len(recs) == 54
    assert _acceptance(recs) == Counter()


def test_planted_leaks_of_real_ceval_are_all_caught(shared_data):
    recs = _ceval_items(shared_data)
    assert len(recs) == 908
    missed = _acceptance(recs)
    print(f"\nreal C-Eval: {len(recs)} items x {len(LISTED)} leak kinds planted, missed: {dict(missed) or 0}")
    assert missed == Counter()


def test_options_only_leaks_with_real_options(shared_data):
    """Stem rewritten, options verbatim: caught whenever the options hold 8+ characters together."""
    recs = _ceval_items(shared_data)
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    long_opts = [
        r
        for r in recs
        if sum(len(normalise(c)) for c in r["choices"] if len(normalise(c)) >= 2) >= 8
        and all(len(normalise(c)) >= 2 for c in r["choices"])
    ]
    missed = [r["id"] for r in long_opts if not _caught(g, items, r, "options_only_reworded")]
    assert len(long_opts) > 600 and missed == []


def _pool_segments(rec: dict) -> list[str]:
    if "conversations" in rec:
        parts = [t.get("value", "") for t in rec["conversations"]]
    elif "instruction" in rec:
        parts = [rec.get("instruction", ""), rec.get("input", ""), rec.get("output", "")]
    else:
        parts = [rec.get("question", ""), rec.get("answer", "")]
    return [s for s in (normalise(p) for p in parts if isinstance(p, str)) if s]


def test_false_drop_rate_on_the_real_pool(shared_data):
    """Real pool samples that are not derived from the benchmark: under 0.5% dropped."""
    recs = _ceval_items(shared_data)
    items = [_item(r) for r in recs]
    g = ContentGuard(items)
    pool = [
        json.loads(line)
        for f in sorted((shared_data / "pool").glob("*.jsonl"))
        for line in f.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    reasons: Counter = Counter()
    for rec in pool:
        hits = g.check(_pool_segments(rec))
        if hits:
            reasons[hits[0].reason] += 1
    rate = sum(reasons.values()) / len(pool)
    print(
        f"\nfalse drops: {sum(reasons.values())} of {len(pool)} real pool samples ({100 * rate:.2f}%): {dict(reasons)}"
    )
    assert len(pool) > 60000 and rate < 0.005
    random.seed(0)


def test_planted_leaks_never_reach_either_sft_set(shared_data, tmp_path):
    """Real C-Eval as the benchmark, a real pool with every kind of leak of 30 items planted in it
    (recall queries and test items alike): recall and sft_build run, and no leak is in either arm."""
    from real_pool import selection_paths, write_real_benchmark, write_real_pool
    from test_sft import _files

    from evalsel.io import read_json, text_hash
    from evalsel.recall import run_recall
    from evalsel.sft import build_sft

    subjects = ["basic_medicine", "clinical_medicine", "physician"]
    recs = _ceval_items(shared_data)
    write_real_benchmark(shared_data, tmp_path, subjects)
    rng = random.Random(1)
    targets = rng.sample([r for r in recs if "/val/" in r["id"]], 15) + rng.sample(
        [r for r in recs if "/test/" in r["id"]], 15
    )
    planted = {}
    for r in targets:
        for kind in KINDS:
            v = variant(r, kind)
            conv = [{"from": "human", "value": v["instruction"]}, {"from": "gpt", "value": v["output"]}]
            pid = text_hash(json.dumps(conv, ensure_ascii=False))
            planted[pid] = (r["id"], kind)
    leaks = [[variant(r, kind)["instruction"], variant(r, kind)["output"]] for r in targets for kind in KINDS]
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
        assert recalled_drops[pid]["reason"] in ("exact_ngram", "containment", "fuzzy", "options")
    report = read_json(tmp_path / "results/sft/contamination.json")
    by_item = {row["id"]: {d["sample_id"] for d in row["dropped"]} for row in report["benchmark"]}
    for pid in set(planted) & set(recalled_drops):
        assert pid in by_item[recalled_drops[pid]["benchmark_id"]]
    review = (tmp_path / "results/sft/contamination_review.md").read_text(encoding="utf-8")
    assert review.count("\n## ") == 20
    assert stats["contamination"]["drops_by_reason"]


def test_transfer_guard_lists_items_a_training_sample_matches(tmp_path):
    """A transfer benchmark played no part in selection: the finished SFT sets are scanned against
    it, and the evaluation leaves every matched item out for every model."""
    from evalsel.evaluate import load_questions
    from evalsel.io import write_jsonl
    from evalsel.transfer import run_transfer_guard

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
